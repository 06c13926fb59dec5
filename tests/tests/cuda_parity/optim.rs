//! The fused AdamW update (`tensor/src/ops/optim.rs`).

use tensor::AdamWStep;

use super::harness::{randn, uniform, Parity, TRAIN, VIEWS};

#[test]
fn adamw_update() {
    let Some(mut p) = Parity::new("adamw_update") else {
        return;
    };
    // Step 3 of lr 1e-2, betas (0.9, 0.999), eps 1e-8, with and without weight decay 0.1.
    let (bc1, bc2) = (1.0 - 0.9f64.powi(3), 1.0 - 0.999f64.powi(3));
    let plain = AdamWStep {
        b1: 0.9,
        b2: 0.999,
        decay: 1.0,
        step_size: 1e-2 * bc2.sqrt() / bc1,
        eps: 1e-8 * bc2.sqrt(),
    };
    let decayed = AdamWStep {
        decay: 1.0 - 1e-2 * 0.1,
        ..plain
    };
    for dtype in TRAIN {
        for (seed, &(name, shape, view)) in VIEWS.iter().enumerate() {
            let seed = 10 * seed as u64;
            // p, g, m, and v (a second moment: not negative).
            let inputs = [
                randn(shape, seed),
                randn(shape, seed + 1),
                randn(shape, seed + 2).mul_scalar(0.1).unwrap(),
                uniform(shape, 0.0, 0.1, seed + 3),
            ];
            for (what, step) in [("", plain), (" with weight decay", decayed)] {
                p.close(&format!("adamw_update {name}{what}"), dtype, &inputs, |x| {
                    let [pv, gv, mv, vv] = [0, 1, 2, 3].map(|i| view(&x[i]));
                    let (p, m, v) = pv?.adamw_update(&gv?, &mv?, &vv?, &step)?;
                    Ok(vec![p, m, v])
                });
            }
        }
    }
    p.finish();
}
