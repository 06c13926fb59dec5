//! Parity of every tensor op, forward and backward, on CUDA against the CPU: random inputs of odd
//! sizes (and a few large enough for several blocks), contiguous and strided (transposed,
//! narrowed with an offset, broadcast with stride 0, permuted), since the CUDA kernels read views
//! directly.
//!
//! Each comparison runs one function twice, on CPU inputs and on the same inputs moved to
//! `cuda:0`, and compares every output, as ‖cuda − cpu‖ / ‖cpu‖ or exactly:
//! - f32 within 1e-5 and f64 within 1e-12; bf16 and f16 within 1e-2 for the training ops
//!   (elementwise, reductions, matmul, conv, norms, softmax, pooling, index_add / scatter_add) and
//!   3e-2 for the autograd composites (attention and blocks, which round every intermediate).
//!   Float inputs are rounded to the dtype once, on the CPU; CUDA computes on them in the dtype,
//!   the CPU computes the reference on the same values one dtype wider (f32 for the halves, which
//!   it does not compute in; f64 for f32), so that the error measured is CUDA's alone;
//! - ops that only move, select or compare elements (copies, casts, cat, pad, gather, max, argmax,
//!   comparisons) must match exactly, the CPU computing in the same dtype.
//!
//! A backward op is given the saved values it reads (an op's output, softmax's y) as inputs,
//! computed once on the CPU, so that each kernel is compared on the same values; norms' backward
//! passes read the mean and rstd of their own device's forward.
//!
//! The ops are those of `tensor/src/ops/*.rs` (every `pub fn`) and the creation, cast and
//! transfer functions of `tensor/src/tensor.rs`; `autograd_parity` adds the composite ops of
//! autograd (attention, losses, dropout) through a backward pass, and
//! `gemm_epilogues_on_tensor_cores_and_simt` calls `kernels::matmul::gemm_fused` on raw device
//! buffers, for the fused epilogue that no tensor op reaches yet, with an error bound per element.
//!
//! One module per op family, as `tensor/src/ops/` has them, in `cuda_parity/`: `creation`
//! (tensor.rs), `elementwise`, `reduce`, `matmul`, `conv`, `norm`, `pool`, `index`, `optim`;
//! `gemm_fused` (the raw GEMM) and `composites` (through autograd); `harness` holds what they
//! share: the dtypes, the comparison ([`Parity`](cuda_parity::harness::Parity)) and the inputs.
//!
//! Without a GPU every test prints `skipped: no CUDA device (<reason>)` and passes. With
//! `DIFFTUNE_PARITY_SELF_TEST=1` the tests run with the CPU standing in for the GPU: nothing is
//! compared that could fail, but every case runs, which checks the cases themselves on a machine
//! without a GPU.

mod cuda_parity {
    pub mod composites;
    pub mod conv;
    pub mod creation;
    pub mod elementwise;
    pub mod gemm_fused;
    pub mod harness;
    pub mod index;
    pub mod matmul;
    pub mod norm;
    pub mod optim;
    pub mod pool;
    pub mod reduce;
}
