//! 2-D convolution: [`Tensor::conv2d`] and its two backward passes, their hyper-parameters
//! ([`Conv2dParams`]) and checked sizes ([`Geometry`]), which both backends read.
//!
//! The CPU runs it as im2col + GEMM on the `gemm` crate (`cpu/conv.rs`), CUDA as im2col + one
//! batched GEMM launch per chunk of images (`cuda/conv.rs`).

use crate::cpu::conv as cpu;
use crate::cuda::conv as cuda;
use crate::{ensure_shape, Result, Tensor};

/// Hyper-parameters of [`Tensor::conv2d`], as in PyTorch's `F.conv2d`; each pair is (H, W).
///
/// ```
/// use tensor::Conv2dParams;
/// let p = Conv2dParams { stride: (2, 2), padding: (1, 1), ..Default::default() };
/// assert_eq!((p.dilation, p.groups), ((1, 1), 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between windows.
    pub stride: (usize, usize),
    /// Zeros added on both sides of the input.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels are split into this many independent parts.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// The checked sizes of one convolution, which both backends read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) p: Conv2dParams,
}

/// Output length of a sliding window along one axis, or `None` when the window does not fit.
pub(crate) fn window_out_len(
    len: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (len + 2 * padding)
        .checked_sub(span)
        .map(|room| room / stride + 1)
}

impl Geometry {
    pub(crate) fn new(input: &[usize], weight: &[usize], p: &Conv2dParams) -> Result<Geometry> {
        ensure_shape!(
            input.len() == 4 && weight.len() == 4,
            "conv2d",
            "input {input:?} and weight {weight:?}: expected input [N, Cin, H, W] and weight [Cout, Cin/groups, kh, kw]"
        );
        let (n, cin, h, w) = (input[0], input[1], input[2], input[3]);
        let (cout, cin_g, kh, kw) = (weight[0], weight[1], weight[2], weight[3]);
        let g = p.groups;
        ensure_shape!(
            g > 0 && cin % g == 0 && cout % g == 0,
            "conv2d",
            "input {input:?} and weight {weight:?}: {cin} input and {cout} output channels are not both divisible by groups = {g}"
        );
        ensure_shape!(
            cin_g * g == cin,
            "conv2d",
            "input {input:?} and weight {weight:?}: input has {cin} channels, weight expects {cin_g} x groups {g} = {}",
            cin_g * g
        );
        ensure_shape!(
            p.stride.0 > 0 && p.stride.1 > 0 && p.dilation.0 > 0 && p.dilation.1 > 0,
            "conv2d",
            "input {input:?} and weight {weight:?}: stride {:?} and dilation {:?} must be positive",
            p.stride,
            p.dilation
        );
        ensure_shape!(
            kh > 0 && kw > 0,
            "conv2d",
            "weight {weight:?}: empty kernel"
        );
        let out = |len, k, axis: usize| {
            let pick = |pair: (usize, usize)| if axis == 0 { pair.0 } else { pair.1 };
            window_out_len(len, k, pick(p.stride), pick(p.padding), pick(p.dilation))
        };
        let (Some(ho), Some(wo)) = (out(h, kh, 0), out(w, kw, 1)) else {
            return Err(crate::Error::shape(
                "conv2d",
                format!(
                    "input {input:?} and weight {weight:?}: kernel {kh}x{kw} with dilation {:?} is larger than the padded input {}x{} (padding {:?})",
                    p.dilation,
                    h + 2 * p.padding.0,
                    w + 2 * p.padding.1,
                    p.padding
                ),
            ));
        };
        Ok(Geometry {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            ho,
            wo,
            p: *p,
        })
    }

    pub(crate) fn input_shape(&self) -> [usize; 4] {
        [self.n, self.cin, self.h, self.w]
    }

    pub(crate) fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.p.groups, self.kh, self.kw]
    }

    pub(crate) fn output_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.ho, self.wo]
    }

    pub(crate) fn cout_g(&self) -> usize {
        self.cout / self.p.groups
    }

    /// Rows of one group's column matrix: Cin/g · kh · kw.
    pub(crate) fn k(&self) -> usize {
        self.cin / self.p.groups * self.kh * self.kw
    }

    /// Columns of the column matrix: Ho · Wo.
    pub(crate) fn l(&self) -> usize {
        self.ho * self.wo
    }

    pub(crate) fn image_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    pub(crate) fn out_image_len(&self) -> usize {
        self.cout * self.l()
    }

    /// Whether the image itself is the column matrix (1x1 kernel, stride 1, no padding).
    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == (1, 1) && self.p.padding == (0, 0)
    }

    /// Checks that `grad_out` has this convolution's output shape.
    fn check_grad(&self, op: &'static str, grad_out: &[usize]) -> Result<()> {
        ensure_shape!(
            grad_out == self.output_shape(),
            op,
            "grad_out {grad_out:?} for input {:?} and weight {:?}: expected {:?}",
            self.input_shape(),
            self.weight_shape(),
            self.output_shape()
        );
        Ok(())
    }
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch's `F.conv2d` without bias): input
    /// `[N, Cin, H, W]`, weight `[Cout, Cin/groups, kh, kw]`, output `[N, Cout, Ho, Wo]` with
    /// `Ho = (H + 2·pad - dil·(kh-1) - 1) / stride + 1` (likewise Wo).
    ///
    /// ```
    /// use tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let w = Tensor::from_vec(vec![1f32; 4], &[1, 1, 2, 2]).unwrap();
    /// let p = Conv2dParams { stride: (2, 2), ..Default::default() };
    /// let y = x.conv2d(&w, &p).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![10., 18., 42., 50.]);
    /// ```
    pub fn conv2d(&self, weight: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
        self.conv2d_bias(weight, None, p)
    }

    /// [`Tensor::conv2d`] plus a per-channel `bias` of shape `[Cout]`, added inside the kernel.
    pub fn conv2d_bias(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        self.same_kind("conv2d", weight)?;
        let g = Geometry::new(self.shape(), weight.shape(), p)?;
        if let Some(b) = bias {
            self.same_kind("conv2d", b)?;
            ensure_shape!(
                b.shape() == [g.cout],
                "conv2d",
                "bias {:?} for weight {:?}: expected [{}]",
                b.shape(),
                weight.shape(),
                g.cout
            );
        }
        if self.is_cuda() {
            return cuda::conv2d(&g, self, weight, bias);
        }
        cpu::conv2d(&g, self, weight, bias)
    }

    /// The gradient of [`Tensor::conv2d`] with respect to its input: `self` is the gradient of
    /// the output, `input_shape` the shape of the input.
    pub fn conv2d_backward_input(
        &self,
        weight: &Tensor,
        input_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_backward_input";
        self.same_kind(OP, weight)?;
        let g = Geometry::new(input_shape, weight.shape(), p)?;
        g.check_grad(OP, self.shape())?;
        if self.is_cuda() {
            return cuda::conv2d_backward_input(&g, self, weight);
        }
        cpu::conv2d_backward_input(&g, self, weight)
    }

    /// The gradient of [`Tensor::conv2d`] with respect to its weight: `self` is the gradient of
    /// the output, `weight_shape` the shape of the weight.
    pub fn conv2d_backward_weight(
        &self,
        input: &Tensor,
        weight_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_backward_weight";
        self.same_kind(OP, input)?;
        let g = Geometry::new(input.shape(), weight_shape, p)?;
        g.check_grad(OP, self.shape())?;
        if self.is_cuda() {
            return cuda::conv2d_backward_weight(&g, self, input);
        }
        cpu::conv2d_backward_weight(&g, self, input)
    }
}
