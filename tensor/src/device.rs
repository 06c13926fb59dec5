//! Where a tensor's memory lives.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The device of a tensor: host memory, or a CUDA GPU by ordinal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory.
    #[default]
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

impl Device {
    /// The CUDA device `ordinal`, opened (context, stream, kernels on first use) if it can be,
    /// else a clear error: no driver, no NVRTC, no such device.
    ///
    /// ```
    /// use tensor::Device;
    /// match Device::cuda(0) {
    ///     Ok(d) => assert_eq!(d.to_string(), "cuda:0"),
    ///     Err(e) => assert!(e.to_string().contains("cuda:0")), // a machine without a GPU
    /// }
    /// ```
    pub fn cuda(ordinal: usize) -> Result<Device> {
        crate::cuda::gpu(ordinal)?;
        Ok(Device::Cuda(ordinal))
    }

    /// Whether this is a CUDA device.
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
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
