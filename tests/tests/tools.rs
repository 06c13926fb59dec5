//! The Python tools' own tests (`tools/test_*.py`, unittest), run here so that CI runs them: which
//! state dict `tools/convert_pt.py` takes out of a checkpoint, with plain dicts, and a conversion
//! end to end where torch is installed (skipped, and said so, where it is not).

use std::path::Path;
use std::process::Command;

#[test]
fn convert_pt_chooses_a_state_dict_or_refuses() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/test_convert_pt.py");
    let out = match Command::new("python3").arg(&script).output() {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: python3 cannot be run ({e})");
            return;
        }
    };
    let report = String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(out.status.success(), "{}: {report}", script.display());
}
