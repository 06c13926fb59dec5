//! `train::diffusion` driving the real DiT (the tiny fixture model, learned sigma): one hybrid
//! training loss whose gradient reaches every trainable parameter, and DDIM / DDPM sampling with
//! classifier-free guidance through the model closure, deterministic given x_T and a seed.

use autograd::{no_grad, Var};
use models::dit::{Dit, DitConfig};
use models::ParamStore;
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Generator, Result, Tensor};
use train::diffusion::{
    classifier_free_guidance, create_diffusion, DiffusionConfig, TimestepSampler,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/dit_tiny.safetensors"
);

fn tiny_dit() -> (Dit, ParamStore) {
    let file = SafeTensorsFile::open(FIXTURE).expect("the DiT fixture opens");
    let cfg = DitConfig::from_json(&file.metadata()["config"]).unwrap();
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
    let model = Dit::new(&mut ps, cfg).unwrap();
    ps.load(FIXTURE, "param/", true).unwrap();
    (model, ps)
}

#[test]
fn hybrid_loss_trains_every_dit_parameter() {
    let (dit, ps) = tiny_dit();
    let d = create_diffusion("", &DiffusionConfig::default()).unwrap();
    let mut gen = Generator::new(0);
    let x0 = Tensor::rand(&[4, 4, 8, 8], -1.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap();
    let noise = Tensor::randn(&[4, 4, 8, 8], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap();
    let (t, _) = TimestepSampler::uniform(1000)
        .unwrap()
        .sample(3, &mut gen)
        .unwrap();
    // Step 0 too, so that the decoder likelihood is on the tape.
    let t = Tensor::cat(&[&Tensor::from_vec(vec![0i64], &[1]).unwrap(), &t], 0).unwrap();
    let y = Tensor::from_vec(vec![1i64, 2, 3, 10], &[4]).unwrap();
    let terms = d
        .training_losses_with(|x, tm| dit.forward(&ps, x, tm, &y, None), &x0, &t, &noise)
        .unwrap();
    assert_eq!(terms.loss.shape(), &[4]);
    let vb = terms.vb.as_ref().unwrap().value().to_vec::<f32>().unwrap();
    assert!(vb.iter().all(|v| v.is_finite() && *v >= 0.0), "{vb:?}");
    let grads = terms.loss.mean_all().unwrap().backward().unwrap();
    for (name, var) in ps.iter() {
        if var.requires_grad() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            assert!(
                g.to_f64_vec().unwrap().iter().all(|v| v.is_finite()),
                "{name}"
            );
        }
    }
}

#[test]
fn dit_samples_with_guidance_deterministically() {
    let (dit, ps) = tiny_dit();
    let labels = Tensor::from_vec(vec![3i64, 7, 10, 10], &[4]).unwrap();
    let model = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
        let out = dit.forward(&ps, &Var::constant(x.clone()), t, &labels, None)?;
        Ok(out.value().clone())
    };
    let guided = classifier_free_guidance(model, &[4.0], Some(3));
    let x_t = |seed| {
        Tensor::randn(
            &[2, 4, 8, 8],
            0.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut Generator::new(seed),
        )
        .unwrap()
    };
    let d = create_diffusion("ddim10", &DiffusionConfig::default()).unwrap();
    let a = d
        .ddim_sample_loop(&guided, x_t(1), false, 0.0, &mut Generator::new(1))
        .unwrap();
    let b = d
        .ddim_sample_loop(&guided, x_t(1), false, 0.0, &mut Generator::new(2))
        .unwrap();
    assert_eq!(a.shape(), &[2, 4, 8, 8]);
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert!(a.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
    let c = d
        .ddim_sample_loop(&guided, x_t(2), false, 0.0, &mut Generator::new(1))
        .unwrap();
    assert!(a.max_abs_diff(&c).unwrap() > 1e-3);
    // Guidance changes the samples (scale 1 is the conditional model).
    let plain = classifier_free_guidance(model, &[1.0], Some(3));
    let p = d
        .ddim_sample_loop(&plain, x_t(1), false, 0.0, &mut Generator::new(1))
        .unwrap();
    assert!(a.max_abs_diff(&p).unwrap() > 1e-4);
    // DDPM over "10" with the learned variance; the sampler records no graph.
    let d = create_diffusion("10", &DiffusionConfig::default()).unwrap();
    let s = d
        .p_sample_loop(&guided, x_t(1), true, &mut Generator::new(3))
        .unwrap();
    let s2 = no_grad(|| d.p_sample_loop(&guided, x_t(1), true, &mut Generator::new(3))).unwrap();
    assert_eq!(s.to_vec::<f32>().unwrap(), s2.to_vec::<f32>().unwrap());
}
