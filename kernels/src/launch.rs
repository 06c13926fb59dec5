//! The launch helper every wrapper uses, and the (address, view) pair they take.

use crate::{CUdeviceptr, Dims};

/// A strided input: the buffer's device address and the view of it to read.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Address of the buffer's first element (the view's offset is in `dims`).
    pub ptr: CUdeviceptr,
    /// Shape, strides and offset in elements.
    pub dims: Dims,
}

/// Launches `$family`'s kernel `$name` on `$gpu`'s stream with `$cfg` and the arguments in order
/// (each a place expression whose address is taken), mapping failures to an error naming it.
macro_rules! launch {
    ($gpu:expr, $family:literal, $name:expr, $cfg:expr; $($arg:expr),* $(,)?) => {{
        let name: String = $name;
        let func = $gpu.function($family, &name)?;
        let mut builder = $gpu.stream().launch_builder(&func);
        $(cudarc::driver::PushKernelArg::arg(&mut builder, &$arg);)*
        // SAFETY: the argument list matches the kernel's C signature in the family's .cu file, and
        // every address points into a live buffer large enough for the view or size given.
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .map_err(|e| $crate::Error::msg(format!("launch of {name} failed: {e}")))
    }};
}
pub(crate) use launch;
