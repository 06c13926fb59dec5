//! Reductions over dims: sum, max, min (with keepdim), argmax, and `sum_to`, which undoes a
//! broadcast (the backward of every broadcasting op).

use rayon::prelude::*;

use crate::cpu::{contiguous_slice, float_op};
use crate::cuda::reduce as cuda;
use crate::layout::PAR_THRESHOLD;
use crate::{ensure_shape, Element, Float, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }

    fn row<T: Float>(self, row: &[T]) -> T {
        match self {
            // Accumulate in f64: long f32 sums otherwise lose digits.
            ReduceOp::Sum => T::from_f64(row.iter().map(|x| x.to_f64()).sum()),
            ReduceOp::Max => row.iter().fold(T::NEG_INFINITY, |m, &x| m.max(x)),
            ReduceOp::Min => row.iter().fold(T::INFINITY, |m, &x| m.min(x)),
        }
    }
}

/// Checks `dims` (distinct, in range) and returns the permutation that moves them last, and the
/// output shape.
pub(crate) fn reduce_plan(
    op: &'static str,
    shape: &[usize],
    dims: &[usize],
    keepdim: bool,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut reduced = vec![false; shape.len()];
    for &d in dims {
        ensure_shape!(
            d < shape.len() && !reduced[d],
            op,
            "dims {dims:?} invalid for shape {shape:?} (out of range or repeated)"
        );
        reduced[d] = true;
    }
    let kept = (0..shape.len()).filter(|&d| !reduced[d]);
    let perm: Vec<usize> = kept.clone().chain(dims.iter().copied()).collect();
    let out_shape = if keepdim {
        shape
            .iter()
            .enumerate()
            .map(|(d, &n)| if reduced[d] { 1 } else { n })
            .collect()
    } else {
        kept.map(|d| shape[d]).collect()
    };
    Ok((perm, out_shape))
}

/// `(outer, reduced, inner)` when `x` is contiguous and `dims` are one run of consecutive dims
/// with elements after them: the reduction then reads `[outer, reduced, inner]` in place instead
/// of moving the reduced dims last (a strided copy of the whole tensor). The backward of every
/// bias and broadcast is such a sum.
fn consecutive_split(x: &Tensor, dims: &[usize]) -> Option<(usize, usize, usize)> {
    let (first, last) = (*dims.iter().min()?, *dims.iter().max()?);
    let shape = x.shape();
    let inner: usize = shape[last + 1..].iter().product();
    let run = last - first + 1 == dims.len();
    (run && inner > 1 && x.is_contiguous()).then(|| {
        let outer = shape[..first].iter().product();
        (outer, shape[first..=last].iter().product(), inner)
    })
}

/// `op` over the middle dim of a dense `[outer, reduced, inner]` block.
fn reduce_middle<T: Float>(op: ReduceOp, v: &[T], split: (usize, usize, usize)) -> Vec<T> {
    match op {
        ReduceOp::Sum => middle(v, split, 0.0, |a, b| a + b),
        ReduceOp::Max => middle(v, split, f64::NEG_INFINITY, f64::max),
        ReduceOp::Min => middle(v, split, f64::INFINITY, f64::min),
    }
}

/// Folds `merge` over the middle dim, accumulating in f64 along unit-stride rows of `inner` (so
/// the loop vectorises), in parallel over `outer`, or over slices of the reduced dim when there
/// is one long reduction.
fn middle<T: Float>(
    v: &[T],
    (outer, reduced, inner): (usize, usize, usize),
    identity: f64,
    merge: impl Fn(f64, f64) -> f64 + Sync + Copy,
) -> Vec<T> {
    if reduced == 0 {
        return vec![T::from_f64(identity); outer * inner];
    }
    let block = |rows: &[T]| {
        let mut acc = vec![identity; inner];
        for row in rows.chunks(inner) {
            for (a, x) in acc.iter_mut().zip(row) {
                *a = merge(*a, x.to_f64());
            }
        }
        acc
    };
    let big = v.len() >= PAR_THRESHOLD;
    let acc: Vec<f64> = if big && outer > 1 {
        v.par_chunks(reduced * inner).flat_map_iter(block).collect()
    } else if big {
        let rows_per_part = (PAR_THRESHOLD / inner).max(1);
        v.par_chunks(rows_per_part * inner)
            .map(block)
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, &b)| *a = merge(*a, b));
                a
            })
            .unwrap_or_else(|| vec![identity; inner])
    } else {
        v.chunks(reduced * inner).flat_map(block).collect()
    };
    acc.into_iter().map(T::from_f64).collect()
}

impl Tensor {
    fn reduce(&self, op: ReduceOp, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let (perm, out_shape) = reduce_plan(op.name(), self.shape(), dims, keepdim)?;
        let row_len: usize = dims.iter().map(|&d| self.shape()[d]).product();
        ensure_shape!(
            row_len > 0 || op == ReduceOp::Sum,
            op.name(),
            "cannot take the {} over empty dims {dims:?} of shape {:?}",
            op.name(),
            self.shape()
        );
        let x = self.permute(&perm)?;
        if self.is_cuda() {
            let code = match op {
                ReduceOp::Sum => cuda::reduce_code::SUM,
                ReduceOp::Max => cuda::reduce_code::MAX,
                ReduceOp::Min => cuda::reduce_code::MIN,
            };
            return cuda::reduce(op.name(), code, &x, row_len, &out_shape);
        }
        if let Some(split) = consecutive_split(self, dims) {
            let out = float_op!(op.name(), self.cpu_storage(), |v: T| {
                let range = self
                    .layout()
                    .contiguous_range()
                    .expect("checked contiguous");
                T::into_storage(reduce_middle(op, &v[range], split))
            });
            return self.with_storage(out, &out_shape);
        }
        let out = float_op!(op.name(), x.cpu_storage(), |v: T| {
            let v = contiguous_slice(v, x.layout());
            let n_rows = out_shape.iter().product::<usize>();
            let out: Vec<T> = if row_len == 0 {
                vec![T::ZERO; n_rows]
            } else if v.len() >= PAR_THRESHOLD {
                v.par_chunks(row_len).map(|r| op.row(r)).collect()
            } else {
                v.chunks(row_len).map(|r| op.row(r)).collect()
            };
            T::into_storage(out)
        });
        self.with_storage(out, &out_shape)
    }

    /// Sum over `dims`; with `keepdim` the reduced dims stay as size 1.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dims, keepdim)
    }

    /// Maximum over `dims`.
    pub fn max(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dims, keepdim)
    }

    /// Minimum over `dims`.
    pub fn min(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, dims, keepdim)
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let n: usize = dims.iter().filter_map(|&d| self.shape().get(d)).product();
        self.sum(dims, keepdim)?.mul_scalar(1.0 / n as f64)
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    /// Sums the dims that broadcasting from `shape` to `self.shape()` expanded, giving a tensor of
    /// `shape`: the backward of a broadcast.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let n = self.rank();
        ensure_shape!(
            shape.len() <= n,
            "sum_to",
            "cannot sum {:?} to the larger rank {shape:?}",
            self.shape()
        );
        let lead = n - shape.len();
        let dims: Vec<usize> = (0..n)
            .filter(|&d| d < lead || (shape[d - lead] == 1 && self.shape()[d] != 1))
            .collect();
        for d in lead..n {
            ensure_shape!(
                shape[d - lead] == self.shape()[d] || shape[d - lead] == 1,
                "sum_to",
                "{shape:?} does not broadcast to {:?}",
                self.shape()
            );
        }
        self.sum(&dims, true)?.reshape(shape)
    }

    /// Index of the largest element along `dim` (the first on ties), as i64.
    pub fn argmax(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        let (perm, out_shape) = reduce_plan("argmax", self.shape(), &[dim], keepdim)?;
        let len = self.shape()[dim];
        ensure_shape!(
            len > 0,
            "argmax",
            "dim {dim} of shape {:?} is empty",
            self.shape()
        );
        let x = self.permute(&perm)?;
        if self.is_cuda() {
            return cuda::argmax(&x, len, &out_shape);
        }
        let idx: Vec<i64> = float_op!("argmax", x.cpu_storage(), |v: T| {
            let v = contiguous_slice(v, x.layout());
            v.chunks(len)
                .map(|r| (0..len).fold(0, |best, i| if r[i] > r[best] { i } else { best }) as i64)
                .collect()
        });
        Tensor::from_storage(i64::into_storage(idx), &out_shape)
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Device, Generator, Tensor};

    /// The in-place middle-dim reduction agrees with a direct loop, serial and parallel (both
    /// parallel splits), for sum, max and min.
    #[test]
    fn middle_dim_reductions_match_a_direct_loop() {
        let mut gen = Generator::new(3);
        for (outer, reduced, inner) in [(3, 5, 4), (1, 7, 3), (4, 20_000, 2), (1, 70_000, 3)] {
            let x = Tensor::randn(
                &[outer, reduced, inner],
                0.0,
                1.0,
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap();
            let v = x.to_vec::<f64>().unwrap();
            let direct = |init: f64, f: fn(f64, f64) -> f64| -> Vec<f64> {
                let mut out = vec![init; outer * inner];
                for o in 0..outer {
                    for r in 0..reduced {
                        for c in 0..inner {
                            let at = o * inner + c;
                            out[at] = f(out[at], v[(o * reduced + r) * inner + c]);
                        }
                    }
                }
                out
            };
            let sum = x.sum(&[1], false).unwrap().to_vec::<f64>().unwrap();
            let want = direct(0.0, |a, b| a + b);
            for (a, b) in sum.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-9,
                    "sum {outer}x{reduced}x{inner}: {a} vs {b}"
                );
            }
            let max = x.max(&[1], true).unwrap();
            assert_eq!(max.shape(), &[outer, 1, inner]);
            assert_eq!(
                max.to_vec::<f64>().unwrap(),
                direct(f64::NEG_INFINITY, f64::max)
            );
            let min = x.min(&[1], false).unwrap().to_vec::<f64>().unwrap();
            assert_eq!(min, direct(f64::INFINITY, f64::min));
        }
        // Leading dims together, and an empty reduced dim.
        let x = Tensor::ones(&[2, 3, 4], DType::F32, Device::Cpu).unwrap();
        assert_eq!(
            x.sum(&[0, 1], false).unwrap().to_vec::<f32>().unwrap(),
            vec![6.0; 4]
        );
        let empty = Tensor::ones(&[2, 0, 4], DType::F32, Device::Cpu).unwrap();
        assert_eq!(
            empty.sum(&[1], false).unwrap().to_vec::<f32>().unwrap(),
            vec![0.0; 8]
        );
    }
}
