//! A DiT training run against facebookresearch/DiT's `train.py` (fixture
//! `tests/fixtures/dit_train.safetensors`, made by `tools/make_fixture.py dit_train`): ten steps of
//! the hybrid loss with learned sigma (`training_losses`: MSE + the VB term on the detached mean),
//! label dropout from given masks, AdamW (weight decay 0.01) and the EMA update (decay 0.9), in
//! f64 from the same weights, batches, timesteps and noise. Each step's loss and per-sample terms,
//! the final weights and the final moving average agree with the reference to 1e-9; measured
//! 1e-14 (losses) and 3e-13 (weights, EMA).
//!
//! The reference rounds twice to float32 whatever the model's dtype: its timestep features
//! (`t.float() * freqs`, then cos and sin) and the schedule values it reads (`.float()` in
//! `_extract_into_tensor`). difftune computes the features with the same float32 formula, each
//! operation correctly rounded (`timestep_embedding_f32`), and reads the schedule in the model's
//! dtype. The fixture runs the reference with those two steps made the same (see
//! `exact_float32_steps` in the tool): PyTorch's vectorised float32 `exp`, `cos` and `sin` are
//! within an ulp of the correctly rounded value but not always on it (2 of the 128 frequencies,
//! ~5% of the features), and a float32 schedule value is off by up to 3e-8 relative. Against the
//! unmodified reference this test measures 2.2e-7 (losses), 5.7e-7 (VB terms) and 7.3e-8 (final
//! weights, in `t_embedder.mlp.0.weight`, the features' consumer): rounding, not a difference in
//! what is computed, and far above 1e-9.

use autograd::Var;
use difftune_tests::fixture::rel_err;
use models::dit::{force_drop_labels, Dit, DitConfig};
use models::ParamStore;
use serde_json::Value;
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Tensor};
use train::diffusion::{create_diffusion, DiffusionConfig};
use train::optim::{AdamW, AdamWConfig, Ema};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/dit_train.safetensors"
);

/// Relative error allowed per compared tensor (‖ours − ref‖ / ‖ref‖).
const TOL: f64 = 1e-9;

/// The fixture's training hyper-parameters (its `train` metadata).
struct Hyper {
    steps: usize,
    respacing: String,
    adamw: AdamWConfig,
    ema_decay: f64,
}

fn hyper(file: &SafeTensorsFile) -> Hyper {
    let v: Value = serde_json::from_str(&file.metadata()["train"]).expect("`train` is JSON");
    let num = |key: &str| v[key].as_f64().unwrap_or_else(|| panic!("`train.{key}`"));
    Hyper {
        steps: num("steps") as usize,
        respacing: v["respacing"].as_str().expect("`train.respacing`").into(),
        adamw: AdamWConfig {
            lr: num("lr"),
            betas: (
                v["betas"][0].as_f64().unwrap(),
                v["betas"][1].as_f64().unwrap(),
            ),
            eps: num("eps"),
            weight_decay: num("weight_decay"),
        },
        ema_decay: num("ema_decay"),
    }
}

/// The worst relative error of each compared group, with the tensor it was measured on.
#[derive(Default)]
struct Report(Vec<(&'static str, f64, String)>);

impl Report {
    fn add(&mut self, group: &'static str, name: &str, err: f64) {
        match self.0.iter_mut().find(|(g, _, _)| *g == group) {
            Some(worst) if err > worst.1 => *worst = (group, err, name.to_string()),
            Some(_) => {}
            None => self.0.push((group, err, name.to_string())),
        }
    }
}

#[test]
fn ten_training_steps_match_the_reference() {
    let file = SafeTensorsFile::open(FIXTURE).expect("the training fixture opens");
    let cfg = DitConfig::from_json(&file.metadata()["config"]).expect("the config parses");
    let h = hyper(&file);
    let get = |name: &str| file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let dit = Dit::new(&mut ps, cfg.clone()).unwrap();
    assert_eq!(ps.load(FIXTURE, "param/", true).unwrap().loaded, ps.len());
    let initial = ps.subset("");
    // DiT's create_diffusion defaults: linear betas, 1000 steps, ε-prediction, learned sigma.
    let diffusion = create_diffusion(&h.respacing, &DiffusionConfig::default()).unwrap();
    let mut opt = AdamW::new(h.adamw);
    let mut ema = Ema::new(&ps, h.ema_decay);
    let mut report = Report::default();
    let mut dropped = 0;

    for k in 0..h.steps {
        let input = |name: &str| get(&format!("input/step_{k}/{name}"));
        let (x0, noise) = (
            input("x0").to_dtype(DType::F64).unwrap(),
            input("noise").to_dtype(DType::F64).unwrap(),
        );
        let drop: Vec<bool> = input("drop")
            .to_vec::<i64>()
            .unwrap()
            .iter()
            .map(|&d| d == 1)
            .collect();
        dropped += drop.iter().filter(|&&d| d).count();
        let y = force_drop_labels(&input("y"), &drop, cfg.num_classes).unwrap();
        let terms = diffusion
            .training_losses_with(
                |x_t: &Var, t: &Tensor| dit.forward(&ps, x_t, t, &y, None),
                &x0,
                &input("t"),
                &noise,
            )
            .unwrap();
        let loss = terms.loss.mean_all().unwrap();
        let out = |name: &str| get(&format!("out/step_{k}/{name}"));
        let vb = terms.vb.as_ref().expect("learned sigma has a VB term");
        for (group, ours) in [
            ("loss", &loss),
            ("loss_per_sample", &terms.loss),
            ("mse", &terms.mse),
            ("vb", vb),
        ] {
            let err = rel_err(ours.value(), &out(group));
            report.add(group, &format!("step {k}"), err);
        }
        let grads = loss.backward().unwrap();
        opt.step(&mut ps, &grads).unwrap();
        ema.update(&ps).unwrap();
    }
    assert!(dropped > 0, "the fixture's masks drop no label");

    let averaged = ema.store(&ps).unwrap();
    let mut least_moved = f64::INFINITY;
    for (name, var) in ps.iter() {
        let reference = get(&format!("final/{name}"));
        report.add("final", name, rel_err(var.value(), &reference));
        let ema_ref = get(&format!("ema/{name}"));
        report.add(
            "ema",
            name,
            rel_err(&averaged.tensor(name).unwrap(), &ema_ref),
        );
        if var.requires_grad() {
            least_moved = least_moved.min(rel_err(&initial.tensor(name).unwrap(), &reference));
        }
    }
    // Every tensor moved by ≫ TOL, so 1e-9 on the weights checks the updates themselves.
    eprintln!("least relative change of a trainable tensor: {least_moved:.2e}");
    assert!(least_moved > 1e3 * TOL, "{least_moved:e}");
    let table: Vec<String> = report
        .0
        .iter()
        .map(|(g, e, at)| format!("{g:>16}: {e:.2e} ({at})"))
        .collect();
    eprintln!("worst relative error per group:\n{}", table.join("\n"));
    assert_eq!(report.0.len(), 6);
    assert!(report.0.iter().all(|(_, e, _)| *e < TOL), "{table:#?}");
}
