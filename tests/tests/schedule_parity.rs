//! The diffusion schedules against facebookresearch/DiT `create_diffusion(respacing)` for
//! respacings "" (1000 steps), "250" and "ddim50": every float64 quantity of the fixture
//! `schedules_dit.safetensors` within 1e-12 relative error per element, and the timestep maps
//! exactly.

use tensor::safetensors::SafeTensorsFile;
use train::diffusion::{create_diffusion, Diffusion, DiffusionConfig};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/schedules_dit.safetensors"
);

/// Largest |ours − ref| / |ref| over the elements (absolute where the reference is 0).
fn max_rel_err(ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(a, b)| {
            let d = (a - b).abs();
            if *b == 0.0 {
                d
            } else {
                d / b.abs()
            }
        })
        .fold(0.0, f64::max)
}

fn quantities(d: &Diffusion) -> Vec<(&'static str, &[f64])> {
    let s = &d.schedule;
    vec![
        ("betas", &s.betas),
        ("alphas_cumprod", &s.alphas_cumprod),
        ("alphas_cumprod_prev", &s.alphas_cumprod_prev),
        ("posterior_variance", &s.posterior_variance),
        (
            "posterior_log_variance_clipped",
            &s.posterior_log_variance_clipped,
        ),
        ("posterior_mean_coef1", &s.posterior_mean_coef1),
        ("posterior_mean_coef2", &s.posterior_mean_coef2),
    ]
}

#[test]
fn schedules_match_dit() {
    let file = SafeTensorsFile::open(FIXTURE).expect("the schedule fixture opens");
    let mut checked = 0;
    for (key, respacing, steps) in [
        ("full", "", 1000),
        ("250", "250", 250),
        ("ddim50", "ddim50", 50),
    ] {
        let d = create_diffusion(respacing, &DiffusionConfig::default()).unwrap();
        assert_eq!(d.num_timesteps(), steps);
        let map = file
            .tensor(&format!("{key}/timestep_map"))
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        let ours: Vec<i64> = d.timestep_map.iter().map(|&t| t as i64).collect();
        assert_eq!(ours, map, "{key}/timestep_map");
        checked += 1;
        for (name, values) in quantities(&d) {
            let reference = file
                .tensor(&format!("{key}/{name}"))
                .unwrap()
                .to_vec::<f64>()
                .unwrap();
            let err = max_rel_err(values, &reference);
            println!("{key}/{name}: max relative error {err:.3e}");
            assert!(err <= 1e-12, "{key}/{name}: max relative error {err:.3e}");
            checked += 1;
        }
    }
    // Every tensor of the fixture was compared.
    assert_eq!(checked, file.names().len());
}
