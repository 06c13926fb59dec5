//! Ops that move elements without arithmetic: views (reshape, permute, narrow, broadcast,
//! (un)squeeze), cat and stack, padding, and index selection. Each backward puts the gradient
//! back where the elements came from.

use tensor::{Result, Tensor};

use crate::{Op, Var};

impl Var {
    /// Records a view or copy whose backward is `back(grad)`.
    fn moved(
        &self,
        op: Op,
        y: Tensor,
        back: impl FnOnce(&Tensor) -> Result<Tensor> + Send + 'static,
    ) -> Var {
        Var::from_op(op, y, &[self], move |g, _| Ok(vec![Some(back(g)?)]))
    }

    /// The same elements with `shape`.
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let from = self.shape().to_vec();
        Ok(
            self.moved(Op::Reshape, self.value().reshape(shape)?, move |g| {
                g.reshape(&from)
            }),
        )
    }

    /// Dims reordered: output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Var> {
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            if d < inverse.len() {
                inverse[d] = i;
            }
        }
        Ok(
            self.moved(Op::Permute, self.value().permute(dims)?, move |g| {
                g.permute(&inverse)
            }),
        )
    }

    /// Dims `a` and `b` swapped.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Var> {
        let n = self.shape().len();
        let mut dims: Vec<usize> = (0..n).collect();
        if a < n && b < n {
            dims.swap(a, b);
        }
        self.value().transpose(a, b)?; // the error names `transpose`
        self.permute(&dims)
    }

    /// `len` elements from `start` along `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Var> {
        let y = self.value().narrow(dim, start, len)?;
        let rank = self.shape().len();
        let size = self.shape()[dim];
        Ok(self.moved(Op::Narrow, y, move |g| {
            let mut pads = vec![(0, 0); rank - dim];
            pads[0] = (start, size - start - len);
            g.pad(&pads, 0.0)
        }))
    }

    /// Broadcast to `shape`.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Var> {
        let from = self.shape().to_vec();
        Ok(self.moved(
            Op::BroadcastAs,
            self.value().broadcast_as(shape)?,
            move |g| g.sum_to(&from),
        ))
    }

    /// A size-1 dim removed.
    pub fn squeeze(&self, dim: usize) -> Result<Var> {
        Ok(
            self.moved(Op::Squeeze, self.value().squeeze(dim)?, move |g| {
                g.unsqueeze(dim)
            }),
        )
    }

    /// A size-1 dim inserted.
    pub fn unsqueeze(&self, dim: usize) -> Result<Var> {
        Ok(
            self.moved(Op::Unsqueeze, self.value().unsqueeze(dim)?, move |g| {
                g.squeeze(dim)
            }),
        )
    }

    /// A contiguous copy (or the same storage when already contiguous).
    pub fn contiguous(&self) -> Result<Var> {
        Ok(self.moved(
            Op::Contiguous,
            self.value().contiguous()?,
            |g| Ok(g.clone()),
        ))
    }

    /// Constant padding of the last `pads.len()` dims (see [`Tensor::pad`]).
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Result<Var> {
        let y = self.value().pad(pads, value)?;
        let (lead, shape, pads) = (
            self.shape().len() - pads.len(),
            self.shape().to_vec(),
            pads.to_vec(),
        );
        Ok(self.moved(Op::Pad, y, move |g| {
            let mut g = g.clone();
            for (i, &(before, _)) in pads.iter().enumerate() {
                g = g.narrow(lead + i, before, shape[lead + i])?;
            }
            Ok(g)
        }))
    }

    /// Concatenation along `dim`.
    pub fn cat(vars: &[&Var], dim: usize) -> Result<Var> {
        let values: Vec<&Tensor> = vars.iter().map(|v| v.value()).collect();
        let y = Tensor::cat(&values, dim)?;
        let sizes: Vec<usize> = vars.iter().map(|v| v.shape()[dim]).collect();
        Ok(Var::from_op(Op::Cat, y, vars, move |g, needs| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for (&size, &need) in sizes.iter().zip(needs) {
                grads.push(if need {
                    Some(g.narrow(dim, start, size)?)
                } else {
                    None
                });
                start += size;
            }
            Ok(grads)
        }))
    }

    /// Equal shapes stacked along a new dim `dim`.
    pub fn stack(vars: &[&Var], dim: usize) -> Result<Var> {
        let views = vars
            .iter()
            .map(|v| v.unsqueeze(dim))
            .collect::<Result<Vec<_>>>()?;
        Var::cat(&views.iter().collect::<Vec<_>>(), dim)
    }

    /// `n` views along `dim` (the last may be smaller), as torch.chunk.
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Var>> {
        let parts = self.value().chunk(n, dim)?;
        self.split(parts.first().map_or(1, |p| p.shape()[dim]), dim)
    }

    /// Views of `size` along `dim` (the last may be smaller), as torch.split.
    pub fn split(&self, size: usize, dim: usize) -> Result<Vec<Var>> {
        let parts = self.value().split(size, dim)?;
        let mut start = 0;
        parts
            .iter()
            .map(|p| {
                let len = p.shape()[dim];
                start += len;
                self.narrow(dim, start - len, len)
            })
            .collect()
    }

    /// Slices `index[i]` (1-D i64) along `dim`.
    pub fn index_select(&self, dim: usize, index: &Tensor) -> Result<Var> {
        let y = self.value().index_select(dim, index)?;
        let (index, shape) = (index.clone(), self.shape().to_vec());
        Ok(self.moved(Op::IndexSelect, y, move |g| {
            g.index_add(dim, &index, &shape)
        }))
    }

    /// Rows of the table `self` ([num, dim]) for `ids` of any shape: output `ids.shape + [dim]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Var> {
        if self.shape().len() != 2 {
            return Err(tensor::Error::shape(
                "embedding",
                format!("the table must be [num, dim], got {:?}", self.shape()),
            ));
        }
        let flat = ids.reshape(&[ids.elem_count()])?;
        let rows = self.index_select(0, &flat)?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        rows.reshape(&shape)
    }

    /// `out[.., i, ..] = self[.., index[.., i, ..], ..]` along `dim`.
    pub fn gather(&self, dim: usize, index: &Tensor) -> Result<Var> {
        let y = self.value().gather(dim, index)?;
        let (index, shape) = (index.clone(), self.shape().to_vec());
        Ok(self.moved(Op::Gather, y, move |g| g.scatter_add(dim, &index, &shape)))
    }
}
