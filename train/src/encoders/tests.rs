use super::*;

use crate::data::two_tone;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::standard_normal(shape, seed).unwrap()
}

fn scalar(v: f64) -> Var {
    Var::param(Tensor::from_vec(vec![v as f32], &[]).unwrap())
}

#[test]
fn contrastive_loss_is_log_b_for_random_features_and_lower_for_matched_ones() {
    let b = 32;
    let (x, y) = (
        Var::constant(randn(&[b, 64], 1)),
        Var::constant(randn(&[b, 64], 2)),
    );
    // Scale 1: cosines of independent vectors are near 0, every row's softmax near uniform.
    let random = contrastive_loss(&x, &y, &scalar(0.0))
        .unwrap()
        .value()
        .to_scalar()
        .unwrap();
    assert!((random - (b as f64).ln()).abs() < 0.05, "{random}");
    let noisy = Var::constant(
        x.value()
            .add(&randn(&[b, 64], 3).mul_scalar(0.1).unwrap())
            .unwrap(),
    );
    let matched = contrastive_loss(&x, &noisy, &scalar(LOGIT_SCALE_INIT))
        .unwrap()
        .value()
        .to_scalar()
        .unwrap();
    assert!(matched < 0.1 * (b as f64).ln(), "{matched}");
    // The scale is clamped at 100 (and its gradient is zero there); below, it learns.
    let at = |s: f64| {
        contrastive_loss(&x, &noisy, &scalar(s))
            .unwrap()
            .value()
            .to_scalar()
            .unwrap()
    };
    assert_eq!(at(10.0), at(MAX_LOGIT_SCALE.ln()));
    let scale = scalar(1.0);
    let grads = contrastive_loss(&x, &noisy, &scale)
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        grads.get(&scale).unwrap().to_scalar().unwrap() < 0.0,
        "a larger scale helps matched pairs"
    );
    assert!(contrastive_loss(&x, &Var::constant(randn(&[b, 8], 4)), &scale).is_err());
}

const LOGIT_SCALE_INIT: f64 = models::encoder::clip::LOGIT_SCALE_INIT;

#[test]
fn augment_keeps_the_shape_and_without_shift_or_noise_only_flips() {
    let x = randn(&[6, 1, 5, 5], 7).clamp(-1.0, 1.0).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let same = augment(&x, 0, 0.0, &mut rng).unwrap();
    assert_eq!(same.shape(), x.shape());
    let flipped = transform::hflip(&x).unwrap();
    for i in 0..6 {
        let (a, b, f) = (
            same.narrow(0, i, 1).unwrap(),
            x.narrow(0, i, 1).unwrap(),
            flipped.narrow(0, i, 1).unwrap(),
        );
        let d = a.max_abs_diff(&b).unwrap().min(a.max_abs_diff(&f).unwrap());
        assert_eq!(d, 0.0, "image {i} is neither itself nor its mirror");
    }
    let shifted = augment(&x, 2, 0.1, &mut StdRng::seed_from_u64(1)).unwrap();
    assert!(shifted.max_abs_diff(&x).unwrap() > 0.0);
    let again = augment(&x, 2, 0.1, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(shifted.max_abs_diff(&again).unwrap(), 0.0, "seeded");
}

#[test]
fn supervised_training_of_a_tiny_cnn_lowers_the_loss_and_is_seeded() {
    let cfg = EncoderTraining {
        kind: EncoderKind::Cnn,
        steps: 12,
        batch: 16,
        lr: 5e-3,
        ..Default::default()
    };
    let data = two_tone(64, 1);
    let (encoder, ps, report) = train_encoder(&data, &cfg, Device::Cpu).unwrap();
    let (first, last) = report.first_and_last(3);
    assert!(last < 0.7 * first, "{:?}", report.losses);
    let (_, _, again) = train_encoder(&data, &cfg, Device::Cpu).unwrap();
    assert_eq!(report, again);
    // The probe separates the trained features of held-out images.
    let (ft, fh) = (
        pooled_features(&encoder, &ps, &data).unwrap(),
        pooled_features(&encoder, &ps, &two_tone(20, 9)).unwrap(),
    );
    assert_eq!(ft.shape(), &[64, 128]);
    let probe = linear_probe((&ft, data.labels()), (&fh, two_tone(20, 9).labels()), 2, 50).unwrap();
    assert!(probe.held_out_accuracy > 0.95, "{probe:?}");
}

#[test]
fn contrastive_training_of_a_tiny_clip_runs_and_refuses_a_batch_of_one() {
    let cfg = EncoderTraining {
        kind: EncoderKind::Clip,
        steps: 3,
        batch: 8,
        ..Default::default()
    };
    let (encoder, ps, report) = train_encoder(&two_tone(16, 2), &cfg, Device::Cpu).unwrap();
    assert_eq!(report.losses.len(), 3);
    assert!(encoder.logit_scale(&ps).is_ok());
    let one = EncoderTraining { batch: 1, ..cfg };
    let e = train_encoder(&two_tone(16, 2), &one, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--batch-size 1"), "{e}");
}

#[test]
fn probe_shapes_are_checked() {
    let f = randn(&[4, 3], 0);
    let e = linear_probe((&f, &[0, 1, 0]), (&f, &[0, 1, 0, 1]), 2, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[4, 3]"), "{e}");
}
