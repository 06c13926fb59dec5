//! Weights-only exports: a run's moving-average weights with LoRA merged and DiffFit's scales
//! folded in, under the reference parameter names (and DeMe's projections, which are part of a
//! `deme` run's model), with the run's state (config, classes,
//! image shape, step) in the file's metadata. A few megabytes instead of a checkpoint with its
//! optimizer state; `--init`, `sample` and `eval` take one as they take a run folder.

use std::collections::HashMap;
use std::path::Path;

use models::peft::merge_lora;
use models::ParamStore;
use tensor::safetensors::{self, SafeTensorsFile};
use tensor::{Error, Result, Tensor};

use super::checkpoint::CheckpointState;
use super::{load_model, LoadedModel, Network, Weights};
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
    refuse_existing(out)?;
    let mut model = load_model(run, Weights::Ema)?;
    let values = plain_weights(&mut model)?;
    write_weights(out, model.state, &values, &[])
}

/// An error when `out` exists: a user's file is never replaced.
pub fn refuse_existing(out: &Path) -> Result<()> {
    match out.exists() {
        true => Err(Error::msg(format!(
            "{} already exists; choose another output file (it is never overwritten)",
            out.display()
        ))),
        false => Ok(()),
    }
}

/// The weights of `model` under the names of a plain network of its config and what its method
/// adds to it (DeMe's projections, which are part of the model), with LoRA merged and
/// DiffFit's scales folded in: what [`export`] writes.
pub(crate) fn plain_weights(model: &mut LoadedModel) -> Result<Vec<(String, Tensor)>> {
    plain_weights_of(&model.network, &mut model.params, &model.state)
}

/// [`plain_weights`] of the weights `params` of `network`, a model of the run of `state`
/// (LoRA is merged and DiffFit folded into `params` itself).
pub(crate) fn plain_weights_of(
    network: &Network,
    params: &mut ParamStore,
    state: &CheckpointState,
) -> Result<Vec<(String, Tensor)>> {
    merge_lora(params)?;
    network.fold_difffit(params)?;
    plain_names(state)?
        .into_iter()
        .map(|name| {
            let value = params.tensor(&name)?;
            Ok((name, value))
        })
        .collect()
}

/// The parameter names of a plain network of `state`'s config, with its method's additions.
pub(crate) fn plain_names(state: &CheckpointState) -> Result<Vec<String>> {
    let mut plain = ParamStore::new(tensor::DType::F32, tensor::Device::Cpu, 0);
    let network = Network::new(
        &mut plain,
        &state.config,
        state.image_shape,
        state.classes.len(),
    )?;
    state.config.method.add_parameters(&network, &mut plain)?;
    Ok(plain.names().map(str::to_string).collect())
}

/// Writes `values` to `out` as a weights-only file with `state` (its trainable kind reset to
/// `full`: whatever trained is now in the weights) and the `extra` metadata entries.
pub(crate) fn write_weights(
    out: &Path,
    mut state: CheckpointState,
    values: &[(String, Tensor)],
    extra: &[(&str, String)],
) -> Result<ExportReport> {
    refuse_existing(out)?;
    state.config.trainable = Trainable::default();
    state.checksums.clear();
    let mut metadata = HashMap::from([(
        STATE_KEY.to_string(),
        serde_json::to_string(&state).expect("checkpoint state is plain JSON"),
    )]);
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
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
