//! The evaluation metrics on real data through the committed classifiers
//! (`data/classifiers/*.safetensors`): accuracy of the classifiers, FD and KID of two halves of
//! Fashion-MNIST against Fashion-MNIST vs Animal-MNIST, unbiasedness of KID, and `evaluate` end
//! to end. Subsets of 2,000 images keep it fast on a 2-core CI machine.

use std::path::{Path, PathBuf};

use models::classifier::Classifier;
use tensor::Generator;
use train::data::DataSource;
use train::data::{transform, Dataset, Split, FASHION_MNIST_DIR};
use train::eval::classifier::{accuracy, run, ClassifierOutput};
use train::eval::kid::{kid, KidConfig};
use train::eval::reference::subset_rows;
use train::eval::stats::{frechet_distance, self_distance_rounding, FeatureStats};
use train::eval::{evaluate, ReferenceStats};

fn classifier(name: &str) -> Classifier {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/classifiers")
        .join(format!("{name}.safetensors"));
    Classifier::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fashion_installed() -> bool {
    let ok = Path::new(FASHION_MNIST_DIR).is_dir();
    if !ok {
        println!("skipped: {FASHION_MNIST_DIR} is missing (run scripts/setup.sh)");
    }
    ok
}

/// The first `n` images of a data set.
fn head(data: &Dataset, n: usize) -> Dataset {
    data.subset(&(0..n.min(data.len())).collect::<Vec<_>>())
        .unwrap()
}

/// A seeded random subset of `n` images (Animal-MNIST is stored class by class).
fn sample(data: &Dataset, n: usize, seed: u64) -> Dataset {
    data.subset(&subset_rows(data.len(), n, seed)).unwrap()
}

fn features(model: &Classifier, data: &Dataset) -> ClassifierOutput {
    run(
        model,
        &transform::scale(&data.images_tensor().unwrap()).unwrap(),
    )
    .unwrap()
}

fn rows(out: &ClassifierOutput, range: std::ops::Range<usize>) -> &[f64] {
    &out.features[range.start * out.dim..range.end * out.dim]
}

#[test]
fn committed_classifiers_reach_90_percent_on_held_out_images() {
    let animal = classifier("animal-mnist");
    let held_out = DataSource::AnimalMnist
        .held_out(animal.config.input)
        .unwrap();
    assert_eq!(held_out.len(), 2000);
    let acc = accuracy(&animal, &held_out).unwrap();
    println!("animal-mnist held-out accuracy: {acc:.4}");
    assert!(acc >= 0.90, "animal-mnist held-out accuracy {acc}");
    if fashion_installed() {
        let fashion = classifier("fashion-mnist");
        let test = head(&Dataset::fashion_mnist(Split::Test).unwrap(), 2000);
        let acc = accuracy(&fashion, &test).unwrap();
        println!("fashion-mnist accuracy on the first 2000 test images: {acc:.4}");
        assert!(acc >= 0.90, "fashion-mnist test accuracy {acc}");
    }
}

#[test]
fn fashion_halves_are_far_closer_than_fashion_and_animal() {
    if !fashion_installed() {
        return;
    }
    let model = classifier("fashion-mnist");
    let fashion = features(
        &model,
        &head(&Dataset::fashion_mnist(Split::Test).unwrap(), 2000),
    );
    let animal = features(&model, &sample(&Dataset::animal_mnist().unwrap(), 1000, 0));
    let (a, b, c) = (
        rows(&fashion, 0..1000),
        rows(&fashion, 1000..2000),
        &animal.features[..],
    );
    let dim = fashion.dim;
    let stats = |f: &[f64]| FeatureStats::from_features(f, dim).unwrap();
    let fd_halves = frechet_distance(&stats(a), &stats(b)).unwrap();
    let fd_cross = frechet_distance(&stats(a), &stats(c)).unwrap();
    let cfg = KidConfig {
        subsets: 20,
        subset_size: 500,
        seed: 0,
    };
    let kid_halves = kid(a, b, dim, &cfg).unwrap();
    let kid_cross = kid(a, c, dim, &cfg).unwrap();
    println!("FD halves {fd_halves:.4}, cross-domain {fd_cross:.4}");
    println!("KID halves {kid_halves:?}\nKID cross-domain {kid_cross:?}");
    assert!(fd_halves > 0.0 && 20.0 * fd_halves < fd_cross);
    assert!(20.0 * kid_halves.mean.abs() < kid_cross.mean);
    assert!(kid_cross.mean > 10.0 * kid_cross.stderr);
    // A set against itself: 0 up to rounding, which scales with √ε and the statistics (see
    // `self_distance_rounding`; the features, and so the rounding, differ between CPUs).
    let fd_self = frechet_distance(&stats(a), &stats(a)).unwrap();
    let bound = self_distance_rounding(&stats(a));
    assert!(
        fd_self.abs() <= bound && bound < fd_halves,
        "{fd_self} (bound {bound})"
    );
}

#[test]
fn kid_is_unbiased_over_random_splits_of_one_set() {
    let model = classifier("animal-mnist");
    let out = features(&model, &sample(&Dataset::animal_mnist().unwrap(), 1200, 1));
    let dim = out.dim;
    let mut gen = Generator::new(7);
    let splits = 40;
    let values: Vec<f64> = (0..splits)
        .map(|s| {
            let mut order: Vec<usize> = (0..1200).collect();
            rand::seq::SliceRandom::shuffle(&mut order[..], gen.rng());
            let pick = |idx: &[usize]| -> Vec<f64> {
                idx.iter()
                    .flat_map(|&i| rows(&out, i..i + 1).iter().copied())
                    .collect()
            };
            let cfg = KidConfig {
                subsets: 1,
                subset_size: 600,
                seed: s,
            };
            kid(&pick(&order[..600]), &pick(&order[600..]), dim, &cfg)
                .unwrap()
                .mean
        })
        .collect();
    let n = splits as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let stderr = std / n.sqrt();
    println!("KID over {splits} random splits: mean {mean:.3e}, stderr {stderr:.3e}");
    assert!(std > 0.0 && mean.abs() < 3.0 * stderr, "{mean} vs {stderr}");
}

#[test]
fn evaluate_scores_real_images_as_real_and_reports_class_accuracy() {
    let model = classifier("animal-mnist");
    let all = Dataset::animal_mnist().unwrap();
    let (train, held) = all.split(0.2, 0).unwrap();
    let reference =
        ReferenceStats::compute("animal-mnist-train", &sample(&train, 2000, 2), &model).unwrap();
    let images = transform::scale(&held.images_tensor().unwrap()).unwrap();
    let report = evaluate(&images, Some(held.labels()), &reference, &model).unwrap();
    println!("{report}");
    let json = report.to_json();
    assert!(json.get("FD-animal-mnist").is_some(), "{json}");
    assert!(!json.to_string().contains("FID"), "{json}");
    assert!(report.class_accuracy.unwrap() >= 0.9);
    assert!(report.precision_recall.precision > 0.6 && report.precision_recall.recall > 0.6);
    assert!(report.inception_score.mean > 5.0);
    // Asking for the wrong classes shows in the class accuracy.
    let shifted: Vec<i64> = held.labels().iter().map(|l| (l + 1) % 10).collect();
    let wrong = evaluate(&images, Some(&shifted), &reference, &model).unwrap();
    assert!(wrong.class_accuracy.unwrap() < 0.1);
    // Misshapen images and label counts are errors that say what is wrong.
    let small = images.narrow(3, 0, 20).unwrap();
    let e = evaluate(&small, None, &reference, &model)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[N, 1, 28, 28]"), "{e}");
    let e = evaluate(&images, Some(&shifted[..5]), &reference, &model)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 requested labels"), "{e}");
}

#[test]
fn a_missing_classifier_file_is_a_clear_error() {
    let e = Classifier::load(PathBuf::from("/nonexistent/c.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/c.safetensors"), "{e}");
}
