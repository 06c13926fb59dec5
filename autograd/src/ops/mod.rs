//! The differentiable ops, one file per family, each op's forward and backward side by side.
//!
//! [`Op`] is the registry of every differentiable op the crate offers. The gradient-check suite
//! matches on it exhaustively, so an op added here without a gradient check does not compile, and
//! a test runs the check of every entry of [`Op::ALL`].

mod conv;
mod elementwise;
mod matmul;
mod nn;
mod reduce;
mod shape;

macro_rules! registry {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Every differentiable op. Primitive ops record themselves on the tape under their name;
        /// composite ops (built from primitives, e.g. `Mean`, `MseLoss`) are listed so that they get
        /// a gradient check of their own too.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(#[$doc])* $name),*
        }

        impl Op {
            /// All ops, in declaration order.
            pub const ALL: &'static [Op] = &[$(Op::$name),*];
        }
    };
}

registry! {
    /// a + b (broadcasting)
    Add,
    /// a - b (broadcasting)
    Sub,
    /// a · b (broadcasting)
    Mul,
    /// a / b (broadcasting)
    Div,
    /// -x
    Neg,
    /// x + c
    AddScalar,
    /// x · c
    MulScalar,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// x^e
    Powf,
    /// |x|
    Abs,
    /// x²
    Square,
    /// tanh
    Tanh,
    /// sigmoid
    Sigmoid,
    /// relu
    Relu,
    /// silu
    Silu,
    /// exact GELU
    Gelu,
    /// tanh GELU
    GeluTanh,
    /// clamp to [lo, hi]
    Clamp,
    /// select by mask
    Where,
    /// fill where a mask is set (composite of Where)
    MaskedFill,
    /// sum over dims
    Sum,
    /// mean over dims (composite)
    Mean,
    /// max over dims
    Max,
    /// min over dims
    Min,
    /// variance over dims (composite)
    Var,
    /// softmax over a dim
    Softmax,
    /// log-softmax over a dim
    LogSoftmax,
    /// batched matmul
    Matmul,
    /// reshape
    Reshape,
    /// permute dims
    Permute,
    /// swap two dims (composite of Permute)
    Transpose,
    /// a range along a dim
    Narrow,
    /// broadcast to a shape
    BroadcastAs,
    /// drop a size-1 dim
    Squeeze,
    /// insert a size-1 dim
    Unsqueeze,
    /// make contiguous
    Contiguous,
    /// concatenate
    Cat,
    /// stack along a new dim (composite)
    Stack,
    /// split into n parts (composite of Narrow)
    Chunk,
    /// split into parts of a size (composite of Narrow)
    Split,
    /// select slices by index
    IndexSelect,
    /// embedding lookup (composite of IndexSelect)
    Embedding,
    /// gather along a dim
    Gather,
    /// constant padding
    Pad,
    /// dtype conversion
    ToDtype,
    /// 2-D convolution
    Conv2d,
    /// nearest-neighbour 2x (or any integer) upsampling
    UpsampleNearest2d,
    /// 2-D average pooling
    AvgPool2d,
    /// layer normalisation
    LayerNorm,
    /// group normalisation
    GroupNorm,
    /// softmax(QK^T/√d + mask) V (fused when there is no mask)
    ScaledDotProductAttention,
    /// fused softmax(scale·QK^T) V over [B, H, S, D], optionally causal
    Attention,
    /// seeded dropout
    Dropout,
    /// mean squared error
    MseLoss,
    /// cross-entropy of logits and class indices
    CrossEntropy,
    /// a block recomputed in backward instead of keeping its activations
    Checkpoint,
}
