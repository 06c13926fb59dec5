//! Where a tensor's memory lives.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The device of a tensor. Only the CPU computes today; `Cuda` is the seam the CUDA backend fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory.
    #[default]
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

impl Device {
    /// The CUDA device `ordinal`, or a clear error where CUDA cannot be used.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Err(Error::Device {
            op: "Device::cuda",
            device: Device::Cuda(ordinal),
            msg: "this build has no CUDA backend yet; use --device cpu".into(),
        })
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// Parses `cpu` or `cuda:N` (`cuda` alone means `cuda:0`).
    fn from_str(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Device::cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Device::cuda(i),
                _ => Err(Error::msg(format!(
                    "device `{s}`: expected `cpu` or `cuda:N`"
                ))),
            },
        }
    }
}
