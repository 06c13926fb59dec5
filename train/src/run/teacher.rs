//! A frozen copy of the model a run starts from, for loss terms against it (see
//! [`crate::methods::Term`]): it runs under `no_grad`, shares the model code, and keeps its
//! weights in a store of its own.

use autograd::{no_grad, Var};
use models::ParamStore;
use tensor::{DType, Device, Error, Result, Tensor};

use super::{load_init, Network, RunConfig};

/// The frozen starting model.
pub(crate) struct Teacher {
    network: Network,
    params: ParamStore,
}

impl Teacher {
    /// The model of `config` with the weights of its `init`, without what the run's trainable
    /// kind adds (the plain pretrained model), for images `[C, H, W]` of `classes` classes.
    pub fn load(config: &RunConfig, image_shape: [usize; 3], classes: usize) -> Result<Teacher> {
        let init = config.init.as_deref().ok_or_else(|| {
            Error::msg(format!(
                "method `{}`: its consistency loss compares with the model the run starts from; \
                 set `init` (or pass --init)",
                config.method.name()
            ))
        })?;
        let device: Device = config.device.parse()?;
        let mut params = ParamStore::new(DType::F32, device, config.seed);
        let network = Network::new(&mut params, config, image_shape, classes)?;
        load_init(init, &mut params, &network, &[])
            .map_err(|e| Error::msg(format!("the frozen starting model: {e}")))?;
        params.set_trainable("*", false);
        params.set_compute_dtype(config.compute_dtype()?);
        Ok(Teacher { network, params })
    }

    /// Its prediction for the same input as the model's.
    pub fn predict(&self, x_t: &Var, t: &Tensor, y: &Tensor) -> Result<Tensor> {
        no_grad(|| self.network.forward(&self.params, x_t, t, y)).map(|v| v.value().clone())
    }
}

/// DeMe's consistency loss: the mean squared distance between the first `channels` channels
/// of the model's `prediction` (those the process's mean is computed from; a learned variance
/// is left out) and the frozen model's.
pub(crate) fn consistency(prediction: &Var, frozen: &Tensor, channels: usize) -> Result<Var> {
    let frozen = Var::constant(frozen.narrow(1, 0, channels)?);
    let gap = prediction.narrow(1, 0, channels)?.sub(&frozen)?;
    gap.mul(&gap)?.mean_all()
}
