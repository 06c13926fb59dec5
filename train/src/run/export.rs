//! Weights-only exports: a run's moving-average weights with LoRA merged and DiffFit's scales
//! folded in, under the reference parameter names only, with the run's state (config, classes,
//! image shape, step) in the file's metadata. A few megabytes instead of a checkpoint with its
//! optimizer state; `--init`, `sample` and `eval` take one as they take a run folder.

use std::collections::HashMap;
use std::path::Path;

use models::peft::merge_lora;
use models::ParamStore;
use tensor::safetensors::{self, SafeTensorsFile};
use tensor::{Error, Result, Tensor};

use super::checkpoint::CheckpointState;
use super::{load_model, Network, Weights};
use crate::methods::Trainable;

/// The metadata key of the run's state (JSON).
pub const STATE_KEY: &str = "difftune.state";

/// What [`export`] wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// Tensors written.
    pub tensors: usize,
    /// Scalars written.
    pub parameters: usize,
    /// The run's step.
    pub step: u64,
}

/// Writes the moving-average weights of `run` (a run folder, a checkpoint folder or an exported
/// file) to `out` as a weights-only file. `out` must not exist: a user's file is never replaced.
pub fn export(run: &Path, out: &Path) -> Result<ExportReport> {
    if out.exists() {
        return Err(Error::msg(format!(
            "{} already exists; choose another output file (it is never overwritten)",
            out.display()
        )));
    }
    let mut model = load_model(run, Weights::Ema)?;
    merge_lora(&mut model.params)?;
    model.network.fold_difffit(&mut model.params)?;
    // The reference model's own parameters: what a plain network of this config holds.
    let mut reference = ParamStore::new(model.params.dtype(), model.params.device(), 0);
    let state = &model.state;
    Network::new(
        &mut reference,
        &state.config,
        state.image_shape,
        state.classes.len(),
    )?;
    let values: Vec<(String, Tensor)> = reference
        .names()
        .map(|name| Ok((name.to_string(), model.params.tensor(name)?)))
        .collect::<Result<_>>()?;
    let mut state = model.state;
    state.config.trainable = Trainable::default();
    state.checksums.clear();
    let metadata = HashMap::from([(
        STATE_KEY.to_string(),
        serde_json::to_string(&state).expect("checkpoint state is plain JSON"),
    )]);
    let tensors: Vec<(&str, &Tensor)> = values.iter().map(|(n, t)| (n.as_str(), t)).collect();
    safetensors::save(out, &tensors, Some(&metadata))?;
    Ok(ExportReport {
        tensors: tensors.len(),
        parameters: values.iter().map(|(_, t)| t.elem_count()).sum(),
        step: state.step,
    })
}

/// The run state stored in an exported weights file, its config validated.
pub fn read_state(file: &Path) -> Result<CheckpointState> {
    let format = |msg: String| Error::Format {
        path: file.to_path_buf(),
        msg,
    };
    let st = SafeTensorsFile::open(file)?;
    let text = st.metadata().get(STATE_KEY).ok_or_else(|| {
        format(format!(
            "no `{STATE_KEY}` in the metadata: not a model exported by `difftune export`"
        ))
    })?;
    let state: CheckpointState =
        serde_json::from_str(text).map_err(|e| format(format!("`{STATE_KEY}`: {e}")))?;
    state
        .config
        .validate()
        .map_err(|e| format(format!("`{STATE_KEY}`: {e}")))?;
    Ok(state)
}
