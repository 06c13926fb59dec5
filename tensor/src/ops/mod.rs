//! The ops on [`Tensor`](crate::Tensor), one file per family: each holds the public methods with
//! their docs, the argument checks, the shape arithmetic both backends share (a convolution's
//! geometry, a normalisation's rows), and the dispatch by device to the kernels of `cpu/` or
//! `cuda/`. To read an op, open its family here; to see how it runs, open the file of the same
//! name in a backend. The backends sit below this module and never import each other.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod pool;
pub(crate) mod reduce;

pub use conv::Conv2dParams;
pub use elementwise::{BinaryOp, CmpOp, Saved, UnaryOp};
pub use optim::AdamWStep;
