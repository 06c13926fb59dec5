//! The U-Net through the binary as the DiT goes: pretrain, checkpoint, resume, sample, info,
//! export, fine-tune from the export with every trainable kind it supports, evaluate; and an
//! unconditional U-Net.

mod common;

use train::run::{load_model, ModelConfig, RunConfig, UnetSettings, Weights};

use common::{image_folder, run_err, run_ok, scratch, tiny_config, tiny_unet, write_config};

#[test]
fn a_unet_trains_checkpoints_samples_exports_and_transfers_through_the_binary() {
    let dir = scratch("unet");
    let data = image_folder(&dir, 3, 4);
    let config = tiny_unet(&data, &dir.join("pre"), true);
    let file = write_config(&dir.join("pre.json"), &config);
    run_ok(&["pretrain", "--config", &file, "--quiet"]);
    let pre = dir.join("pre");
    assert!(pre.join("samples.png").is_file() && pre.join("loss.png").is_file());
    // A finished run resumes to nothing more; the checkpoint holds the U-Net's own names.
    run_ok(&["pretrain", "--config", &file, "--resume", "--quiet"]);
    let model = load_model(&pre, Weights::Ema).unwrap();
    assert_eq!(model.state.step, 4);
    assert!(model
        .params
        .contains("down_blocks.1.attentions.0.to_q.weight"));
    assert!(model.params.contains("class_embedding.weight"));

    let grid = dir.join("grid.png");
    let grid_text = grid.display().to_string();
    let pre_text = pre.display().to_string();
    run_ok(&["sample", &pre_text, "--out", &grid_text, "--per-class", "2"]);
    assert!(grid.is_file());
    let info = run_ok(&["info", &pre_text]);
    assert!(info.contains("U-Net: channels [8, 16]"), "{info}");

    let exported = dir.join("unet.safetensors");
    let exported_text = exported.display().to_string();
    run_ok(&["export", &pre_text, "--out", &exported_text]);

    // Fine-tuning from the export on two other classes, with each trainable kind.
    let target = image_folder(&dir.join("target"), 2, 4);
    for kind in ["full", "lora", "bitfit"] {
        let out = dir.join(format!("tuned-{kind}"));
        let mut tuned = tiny_unet(&target, &out, true);
        tuned.init = Some(exported.clone());
        tuned.trainable = serde_json::from_str(&format!(r#"{{ "kind": "{kind}" }}"#)).unwrap();
        let file = write_config(&dir.join(format!("tuned-{kind}.json")), &tuned);
        run_ok(&["finetune", "--config", &file, "--quiet"]);
        let report = std::fs::read_to_string(out.join("trainable.json")).unwrap();
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        let added: Vec<&str> = report["added"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // Only LoRA adds parameters: factors on the attention projections by default.
        match kind {
            "lora" => assert!(
                !added.is_empty()
                    && added
                        .iter()
                        .all(|n| n.contains("attentions") && n.contains(".lora_")),
                "{added:?}"
            ),
            _ => assert!(added.is_empty(), "{kind}: {added:?}"),
        }
        run_ok(&["sample", &out.display().to_string(), "--out", &grid_text]);
    }
    // DiffFit scales DiT blocks: refused for the U-Net, naming the key.
    let mut difffit = tiny_unet(&target, &dir.join("tuned-difffit"), true);
    difffit.init = Some(exported.clone());
    difffit.trainable = serde_json::from_str(r#"{ "kind": "difffit" }"#).unwrap();
    let file = write_config(&dir.join("difffit.json"), &difffit);
    let err = run_err(&["finetune", "--config", &file, "--quiet"]);
    assert!(err.contains("difffit"), "{err}");

    // A U-Net export does not fit a DiT: the error names a tensor.
    let mut wrong = tiny_config(&target, &dir.join("wrong"));
    wrong.init = Some(exported.clone());
    let file = write_config(&dir.join("wrong.json"), &wrong);
    let err = run_err(&["finetune", "--config", &file, "--quiet"]);
    assert!(
        err.contains("does not fit") && err.contains("blocks"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unconditional_unet_samples_without_labels_and_refuses_guidance() {
    let dir = scratch("unet-uncond");
    let data = image_folder(&dir, 2, 4);
    let config = tiny_unet(&data, &dir.join("run"), false);
    let file = write_config(&dir.join("run.json"), &config);
    run_ok(&["pretrain", "--config", &file, "--quiet"]);
    let model = load_model(&dir.join("run"), Weights::Ema).unwrap();
    assert!(!model.network.conditional() && model.network.null_class().is_none());
    assert!(!model.params.contains("class_embedding.weight"));
    let run = dir.join("run").display().to_string();
    let grid = dir.join("grid.png").display().to_string();
    let err = run_err(&["sample", &run, "--out", &grid, "--cfg-scale", "2"]);
    assert!(err.contains("guidance"), "{err}");
    run_ok(&["sample", &run, "--out", &grid, "--per-class", "1"]);
    // A method that needs the null class is refused before training.
    let mut bank = tiny_unet(&data, &dir.join("bank-run"), false);
    bank.method = serde_json::from_str(&format!(
        r#"{{ "name": "diff-tuning", "bank": "{}" }}"#,
        data.display()
    ))
    .unwrap();
    let file = write_config(&dir.join("bank.json"), &bank);
    let err = run_err(&["pretrain", "--config", &file, "--quiet"]);
    assert!(err.contains("null class"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_key_of_the_other_model_kind_is_refused_naming_it() {
    for (json, key) in [
        (r#"{ "model": { "kind": "unet", "depth": 2 } }"#, "depth"),
        (r#"{ "model": { "channels": [8] } }"#, "channels"),
        (r#"{ "model": { "kind": "vit" } }"#, "vit"),
    ] {
        let err = RunConfig::from_json_str(json).unwrap_err().to_string();
        assert!(err.contains(key), "{json}: {err}");
    }
    // Sizes that do not fit are named before anything trains.
    let dir = scratch("unet-bad");
    let data = image_folder(&dir, 2, 2);
    for (patch, key) in [
        (
            r#"{ "channels": [8, 16, 16, 16], "attention": [false, false, false, false] }"#,
            "channels",
        ),
        (r#"{ "norm_groups": 3 }"#, "norm_groups"),
        (r#"{ "attention": [true] }"#, "attention"),
    ] {
        let mut settings = serde_json::to_value(UnetSettings::default()).unwrap();
        let patch: serde_json::Value = serde_json::from_str(patch).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            settings[k] = v.clone();
        }
        let mut config = tiny_unet(&data, &dir.join("run"), true);
        config.model = ModelConfig::Unet(serde_json::from_value(settings).unwrap());
        let file = write_config(&dir.join("bad.json"), &config);
        let err = run_err(&["pretrain", "--config", &file, "--quiet"]);
        assert!(err.contains(&format!("model.{key}")), "{key}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
