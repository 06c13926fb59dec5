//! Resampling of NCHW images: nearest-neighbour upsampling and average pooling, each with its
//! backward beside it; and, forward only (for inference networks such as Inception-v3), max
//! pooling, average pooling that leaves the padding out of the count, and bilinear resizing.
//! Sizes are checked here ([`Pool`] for the pooling windows); `cpu/pool.rs` and `cuda/pool.rs`
//! hold the loops.

use crate::cpu::pool as cpu;
use crate::cuda::pool as cuda;
use crate::ops::conv::window_out_len;
use crate::{ensure_shape, Result, Tensor};

/// The four dims of an NCHW tensor, or a shape error naming `op`.
pub(crate) fn nchw(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    match *shape {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(crate::Error::shape(
            op,
            format!("expected an [N, C, H, W] tensor, got shape {shape:?}"),
        )),
    }
}

/// The checked sizes of one pooling: input `(h, w)`, output `(ho, wo)`, and the window.
pub(crate) struct Pool {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) kernel: (usize, usize),
    pub(crate) stride: (usize, usize),
    pub(crate) padding: (usize, usize),
}

impl Pool {
    fn new(
        op: &'static str,
        shape: &[usize],
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Pool> {
        let [_, _, h, w] = nchw(op, shape)?;
        ensure_shape!(
            kernel.0 > 0 && kernel.1 > 0 && stride.0 > 0 && stride.1 > 0,
            op,
            "input {shape:?}: kernel {kernel:?} and stride {stride:?} must be positive"
        );
        let out = window_out_len(h, kernel.0, stride.0, padding.0, 1)
            .zip(window_out_len(w, kernel.1, stride.1, padding.1, 1));
        let Some((ho, wo)) = out else {
            return Err(crate::Error::shape(
                op,
                format!(
                    "input {shape:?}: kernel {kernel:?} is larger than the input padded by {padding:?}"
                ),
            ));
        };
        Ok(Pool {
            h,
            w,
            ho,
            wo,
            kernel,
            stride,
            padding,
        })
    }

    /// PyTorch's rule for the forward-only pools here: padding at most half the kernel, so that
    /// every window holds at least one input element.
    fn check_half_kernel_padding(&self, op: &'static str, shape: &[usize]) -> Result<()> {
        ensure_shape!(
            self.padding.0 <= self.kernel.0 / 2 && self.padding.1 <= self.kernel.1 / 2,
            op,
            "input {shape:?}: padding {:?} must be at most half the kernel {:?}",
            self.padding,
            self.kernel
        );
        Ok(())
    }
}

impl Tensor {
    /// Nearest-neighbour upsampling of an `[N, C, H, W]` tensor by integer factors:
    /// `[N, C, H·scale_h, W·scale_w]`, each pixel repeated over a `scale_h × scale_w` block.
    pub fn upsample_nearest2d(&self, scale_h: usize, scale_w: usize) -> Result<Tensor> {
        const OP: &str = "upsample_nearest2d";
        nchw(OP, self.shape())?;
        ensure_shape!(
            scale_h > 0 && scale_w > 0,
            OP,
            "input {:?}: scales ({scale_h}, {scale_w}) must be positive",
            self.shape()
        );
        if self.is_cuda() {
            return cuda::upsample_nearest2d(self, scale_h, scale_w);
        }
        cpu::upsample_nearest2d(self, scale_h, scale_w)
    }

    /// The backward of [`Tensor::upsample_nearest2d`]: `self` is the output gradient; each
    /// `scale_h × scale_w` block is summed.
    pub fn upsample_nearest2d_backward(&self, scale_h: usize, scale_w: usize) -> Result<Tensor> {
        const OP: &str = "upsample_nearest2d_backward";
        let [_, _, ho, wo] = nchw(OP, self.shape())?;
        ensure_shape!(
            scale_h > 0 && scale_w > 0 && ho % scale_h == 0 && wo % scale_w == 0,
            OP,
            "grad {:?} is not made of ({scale_h}, {scale_w}) blocks",
            self.shape()
        );
        if self.is_cuda() {
            return cuda::upsample_nearest2d_backward(self, scale_h, scale_w);
        }
        cpu::upsample_nearest2d_backward(self, scale_h, scale_w)
    }

    /// Average pooling of an `[N, C, H, W]` tensor over `kernel` windows moved by `stride`, the
    /// input zero-padded by `padding` (padding counts in the average, as PyTorch's default).
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        self.avg_pool("avg_pool2d", kernel, stride, padding, true)
    }

    /// Average pooling as [`Tensor::avg_pool2d`], but each window is averaged over the input
    /// elements it covers only, the padding left out of the count (PyTorch's
    /// `count_include_pad = False`, TensorFlow's `SAME` average pooling). Forward only; `padding`
    /// must be at most half the kernel.
    ///
    /// ```
    /// use tensor::{DType, Device, Tensor};
    /// let x = Tensor::ones(&[1, 1, 2, 2], DType::F32, Device::Cpu).unwrap();
    /// let y = x.avg_pool2d_exclude_pad((3, 3), (1, 1), (1, 1)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0; 4]); // a mean of ones, whatever the count
    /// ```
    pub fn avg_pool2d_exclude_pad(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "avg_pool2d_exclude_pad";
        Pool::new(OP, self.shape(), kernel, stride, padding)?
            .check_half_kernel_padding(OP, self.shape())?;
        self.avg_pool(OP, kernel, stride, padding, false)
    }

    /// The average pooling of [`Tensor::avg_pool2d`] (`include_pad`) and
    /// [`Tensor::avg_pool2d_exclude_pad`].
    fn avg_pool(
        &self,
        op: &'static str,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        include_pad: bool,
    ) -> Result<Tensor> {
        let pool = Pool::new(op, self.shape(), kernel, stride, padding)?;
        if self.is_cuda() {
            return cuda::avg_pool2d(self, op, &pool, include_pad);
        }
        cpu::avg_pool2d(self, op, &pool, include_pad)
    }

    /// Max pooling of an `[N, C, H, W]` tensor over `kernel` windows moved by `stride`, the
    /// input padded by `padding` with -∞ (PyTorch's `F.max_pool2d` without dilation or ceil
    /// mode); a NaN in a window gives NaN. Forward only; `padding` must be at most half the
    /// kernel.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1f32, 5., 2., 3., 4., 0., 7., 6., 8.], &[1, 1, 3, 3]).unwrap();
    /// let y = x.max_pool2d((2, 2), (1, 1), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5., 5., 7., 8.]);
    /// ```
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        let pool = Pool::new(OP, self.shape(), kernel, stride, padding)?;
        pool.check_half_kernel_padding(OP, self.shape())?;
        if self.is_cuda() {
            return cuda::max_pool2d(self, &pool);
        }
        cpu::max_pool2d(self, &pool)
    }

    /// Bilinear resizing of an `[N, C, H, W]` tensor to `[N, C, out_h, out_w]`, as PyTorch's
    /// `F.interpolate(x, size=(out_h, out_w), mode='bilinear', align_corners=False)` (no
    /// antialiasing): output `o` samples the input at `(o + 0.5) · in / out - 0.5`, clamped to the
    /// image, and blends its two neighbours along each axis. Forward only.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0f32, 4.], &[1, 1, 1, 2]).unwrap();
    /// let y = x.resize_bilinear2d(1, 4).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0., 1., 3., 4.]);
    /// ```
    pub fn resize_bilinear2d(&self, out_h: usize, out_w: usize) -> Result<Tensor> {
        const OP: &str = "resize_bilinear2d";
        let [_, _, h, w] = nchw(OP, self.shape())?;
        ensure_shape!(
            h > 0 && w > 0 && out_h > 0 && out_w > 0,
            OP,
            "input {:?} to ({out_h}, {out_w}): both sizes must be non-empty",
            self.shape()
        );
        if self.is_cuda() {
            return cuda::resize_bilinear2d(self, out_h, out_w);
        }
        cpu::resize_bilinear2d(self, out_h, out_w)
    }

    /// The backward of [`Tensor::avg_pool2d`]: `self` is the output gradient, `input_shape` the
    /// input's shape; each output's gradient is spread evenly over its window.
    pub fn avg_pool2d_backward(
        &self,
        input_shape: &[usize],
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "avg_pool2d_backward";
        let pool = Pool::new(OP, input_shape, kernel, stride, padding)?;
        let [n, c, _, _] = nchw(OP, input_shape)?;
        ensure_shape!(
            self.shape() == [n, c, pool.ho, pool.wo],
            OP,
            "grad {:?} for input {input_shape:?}: expected [{n}, {c}, {}, {}]",
            self.shape(),
            pool.ho,
            pool.wo
        );
        if self.is_cuda() {
            return cuda::avg_pool2d_backward(self, &pool);
        }
        cpu::avg_pool2d_backward(self, &pool, input_shape)
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Device, Tensor};

    #[test]
    fn forward_only_pools_refuse_padding_over_half_the_kernel() {
        let x = Tensor::ones(&[1, 1, 4, 4], DType::F32, Device::Cpu).unwrap();
        let e = x
            .max_pool2d((2, 2), (1, 1), (2, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_pool2d") && e.contains("half the kernel"),
            "{e}"
        );
        let e = x
            .avg_pool2d_exclude_pad((3, 3), (1, 1), (2, 2))
            .unwrap_err();
        assert!(e.to_string().contains("avg_pool2d_exclude_pad"), "{e}");
        let e = x
            .max_pool2d((5, 5), (1, 1), (0, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than the input"), "{e}");
        let e = x
            .reshape(&[4, 4])
            .unwrap()
            .max_pool2d((1, 1), (1, 1), (0, 0));
        assert!(e.unwrap_err().to_string().contains("[N, C, H, W]"));
    }
}
