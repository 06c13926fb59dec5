//! 2-D convolution on the CPU: the three passes (forward, input gradient, weight gradient) of
//! `ops/conv.rs`. Two implementations share them:
//! - [`direct`]: f32 with explicit AVX-512 or AVX2 vectors, register-blocked along channels, for
//!   one group and a batch that fills the threads: what training runs;
//! - [`im2col`]: column matrix and GEMM, for any float type and geometry: the rest.

mod direct;
mod im2col;

use crate::cpu::isa::isa;
use crate::cpu::{contiguous_slice, float_op, float_op2};
use crate::ops::conv::Geometry;
use crate::{Element, Float, Result, Tensor};
use direct::Pass;

/// The convolution kernels of one float type: f32 takes the direct kernels where they apply.
trait ConvKernels: Float {
    fn forward(g: &Geometry, x: &[Self], w: &[Self], bias: Option<&[Self]>) -> Vec<Self> {
        im2col::forward(g, x, w, bias)
    }
    fn backward_input(g: &Geometry, dy: &[Self], w: &[Self]) -> Vec<Self> {
        im2col::backward_input(g, dy, w)
    }
    fn backward_weight(g: &Geometry, dy: &[Self], x: &[Self]) -> Vec<Self> {
        im2col::backward_weight(g, dy, x)
    }
}

impl ConvKernels for f64 {}

impl ConvKernels for f32 {
    fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        if direct::applies(g, Pass::Forward) {
            direct::forward(isa(), g, x, w, bias)
        } else {
            im2col::forward(g, x, w, bias)
        }
    }
    fn backward_input(g: &Geometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
        if direct::applies(g, Pass::InputGradient) {
            direct::backward_input(isa(), g, dy, w)
        } else {
            im2col::backward_input(g, dy, w)
        }
    }
    fn backward_weight(g: &Geometry, dy: &[f32], x: &[f32]) -> Vec<f32> {
        if direct::applies(g, Pass::WeightGradient) {
            direct::backward_weight(isa(), g, dy, x)
        } else {
            im2col::backward_weight(g, dy, x)
        }
    }
}

/// `Σ_task` of what `add(task, sum, scratch)` adds into a sum of `len` zeros, in parallel: each
/// thread folds its tasks into its own sum (with its own `scratch()`), and the sums are added at
/// the end. The weight gradients sum their images so.
fn parallel_sum<T: Float, S: Send>(
    tasks: usize,
    len: usize,
    scratch: impl Fn() -> S + Sync + Send,
    add: impl Fn(usize, &mut [T], &mut S) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    (0..tasks)
        .into_par_iter()
        .fold(
            || (vec![T::ZERO; len], scratch()),
            |(mut sum, mut s), task| {
                add(task, &mut sum, &mut s);
                (sum, s)
            },
        )
        .map(|(sum, _)| sum)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, &y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![T::ZERO; len])
}

/// Forward convolution of `input` (with the optional per-channel bias), `g` its checked sizes.
pub(crate) fn conv2d(
    g: &Geometry,
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let out = float_op2!(
        "conv2d",
        input.cpu_storage(),
        weight.cpu_storage(),
        |x, w: T| {
            let x = contiguous_slice(x, input.layout());
            let w = contiguous_slice(w, weight.layout());
            let b = bias.map(|b| {
                let data = T::slice(b.cpu_storage()).expect("dtype checked");
                contiguous_slice(data, b.layout())
            });
            T::into_storage(T::forward(g, &x, &w, b.as_deref()))
        }
    );
    input.with_storage(out, &g.output_shape())
}

/// The input gradient: `dy` is the output's gradient, `g` the convolution's checked sizes.
pub(crate) fn conv2d_backward_input(g: &Geometry, dy: &Tensor, weight: &Tensor) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_input";
    let out = float_op2!(OP, dy.cpu_storage(), weight.cpu_storage(), |d, w: T| {
        let d = contiguous_slice(d, dy.layout());
        let w = contiguous_slice(w, weight.layout());
        T::into_storage(T::backward_input(g, &d, &w))
    });
    dy.with_storage(out, &g.input_shape())
}

/// The weight gradient: `dy` is the output's gradient, `g` the convolution's checked sizes.
pub(crate) fn conv2d_backward_weight(g: &Geometry, dy: &Tensor, input: &Tensor) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight";
    let out = float_op!(OP, dy.cpu_storage(), |d: T| {
        let x = T::slice(input.cpu_storage()).expect("dtype checked");
        let d = contiguous_slice(d, dy.layout());
        let x = contiguous_slice(x, input.layout());
        T::into_storage(T::backward_weight(g, &d, &x))
    });
    dy.with_storage(out, &g.weight_shape())
}
