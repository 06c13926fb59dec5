//! The ops on [`Tensor`](crate::Tensor), one file per family: each holds the public methods with
//! their docs, the argument checks, the shape arithmetic both backends share (a convolution's
//! geometry, a normalisation's rows), and the dispatch by device to the kernels of `cpu/` or
//! `cuda/`. To read an op, open its family here; to see how it runs, open the file of the same
//! name in a backend. The backends sit below this module and never import each other.
//!
//! | family | ops |
//! |---|---|
//! | `elementwise` | unary maps and their backward, broadcasting binary ops, comparisons, `where` |
//! | `reduce` | sum, max, min, mean over dims, `sum_to`, argmax |
//! | `matmul` | batched matrix product with broadcast batch dims |
//! | `conv` | 2-D convolution and its two backward passes |
//! | `norm` | softmax, log-softmax, layer norm, group norm, each with its backward |
//! | `pool` | nearest upsampling, average and max pooling, bilinear resizing |
//! | `index` | cat, stack, pad, index_select / index_add, gather / scatter_add |
//! | `optim` | the fused AdamW update |
//! | `attention` | fused scaled dot-product attention and its backward |

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
