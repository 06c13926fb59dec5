//! Image ops: 2-D convolution (with an optional bias), nearest-neighbour upsampling and average
//! pooling, each recorded with its backward from the `tensor` kernels beside the forward.

use tensor::{Conv2dParams, Result};

use crate::ops::elementwise::grad_if;
use crate::{Op, Var};

impl Var {
    /// 2-D convolution as PyTorch's `F.conv2d`: input `[N, Cin, H, W]`, weight
    /// `[Cout, Cin/groups, kh, kw]`, optional bias `[Cout]`; gradients flow to all three.
    ///
    /// ```
    /// use autograd::Var;
    /// use tensor::{Conv2dParams, DType, Device, Tensor};
    /// let x = Var::constant(Tensor::ones(&[1, 2, 4, 4], DType::F32, Device::Cpu).unwrap());
    /// let w = Var::param(Tensor::ones(&[3, 2, 3, 3], DType::F32, Device::Cpu).unwrap());
    /// let p = Conv2dParams { padding: (1, 1), ..Default::default() };
    /// let y = x.conv2d(&w, None, &p).unwrap();
    /// assert_eq!(y.shape(), &[1, 3, 4, 4]);
    /// let grads = y.sum_all().unwrap().backward().unwrap();
    /// assert_eq!(grads.get(&w).unwrap().shape(), &[3, 2, 3, 3]);
    /// ```
    pub fn conv2d(&self, weight: &Var, bias: Option<&Var>, p: &Conv2dParams) -> Result<Var> {
        let y = self
            .value()
            .conv2d_bias(weight.value(), bias.map(Var::value), p)?;
        let (x, w, p) = (self.value().clone(), weight.value().clone(), *p);
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(Var::from_op(Op::Conv2d, y, &inputs, move |g, needs| {
            let mut grads = vec![
                grad_if(needs[0], || g.conv2d_backward_input(&w, x.shape(), &p))?,
                grad_if(needs[1], || g.conv2d_backward_weight(&x, w.shape(), &p))?,
            ];
            if needs.len() > 2 {
                grads.push(grad_if(needs[2], || g.sum(&[0, 2, 3], false))?);
            }
            Ok(grads)
        }))
    }

    /// Nearest-neighbour upsampling of `[N, C, H, W]` by integer factors; the backward sums each
    /// `scale_h × scale_w` block.
    pub fn upsample_nearest2d(&self, scale_h: usize, scale_w: usize) -> Result<Var> {
        let y = self.value().upsample_nearest2d(scale_h, scale_w)?;
        Ok(Var::from_op(
            Op::UpsampleNearest2d,
            y,
            &[self],
            move |g, _| Ok(vec![Some(g.upsample_nearest2d_backward(scale_h, scale_w)?)]),
        ))
    }

    /// Average pooling of `[N, C, H, W]` (padding counts in the average, as PyTorch's default);
    /// the backward spreads each output's gradient evenly over its window.
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Var> {
        let y = self.value().avg_pool2d(kernel, stride, padding)?;
        let shape = self.shape().to_vec();
        Ok(Var::from_op(Op::AvgPool2d, y, &[self], move |g, _| {
            Ok(vec![Some(
                g.avg_pool2d_backward(&shape, kernel, stride, padding)?,
            )])
        }))
    }
}
