//! Progress bars for long work: position, rate and ETA on standard error (hidden when it is not
//! a terminal, so logs stay clean).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what`; its message slot shows e.g. the current loss.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{what:>8} [{{bar:30}}] {{pos}}/{{len}} {{msg}} {{per_sec}} ETA {{eta}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
