//! CPU kernels of the reductions of `ops/reduce.rs`: rows of the view with the reduced dims
//! permuted last, or a dense `[outer, reduced, inner]` block read in place when the reduced dims
//! are one run (every bias and broadcast backward), all summed in f64.

use rayon::prelude::*;

use crate::cpu::{contiguous_slice, float_op};
use crate::layout::PAR_THRESHOLD;
use crate::ops::reduce::ReduceOp;
use crate::{Element, Float, Result, Tensor};

/// What only the CPU asks of a reduction.
impl ReduceOp {
    fn row<T: Float>(self, row: &[T]) -> T {
        match self {
            // Accumulate in f64: long f32 sums otherwise lose digits.
            ReduceOp::Sum => T::from_f64(row.iter().map(|x| x.to_f64()).sum()),
            ReduceOp::Max => row.iter().fold(T::NEG_INFINITY, |m, &x| m.max(x)),
            ReduceOp::Min => row.iter().fold(T::INFINITY, |m, &x| m.min(x)),
        }
    }
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

/// `op` over `dims` of `input`: `permuted` is `input` with those dims moved last, `row_len` the
/// number of elements each output reduces, `out_shape` the output's shape (all checked).
pub(crate) fn reduce(
    op: ReduceOp,
    input: &Tensor,
    dims: &[usize],
    permuted: &Tensor,
    row_len: usize,
    out_shape: &[usize],
) -> Result<Tensor> {
    if let Some(split) = consecutive_split(input, dims) {
        let out = float_op!(op.name(), input.cpu_storage(), |v: T| {
            let range = input
                .layout()
                .contiguous_range()
                .expect("checked contiguous");
            T::into_storage(reduce_middle(op, &v[range], split))
        });
        return input.with_storage(out, out_shape);
    }
    let x = permuted;
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
    input.with_storage(out, out_shape)
}

/// The i64 index of the largest of the last `len` elements of each row of `x` (the input with
/// the reduced dim permuted last), as a tensor of `out_shape`.
pub(crate) fn argmax(x: &Tensor, len: usize, out_shape: &[usize]) -> Result<Tensor> {
    let idx: Vec<i64> = float_op!("argmax", x.cpu_storage(), |v: T| {
        let v = contiguous_slice(v, x.layout());
        v.chunks(len)
            .map(|r| (0..len).fold(0, |best, i| if r[i] > r[best] { i } else { best }) as i64)
            .collect()
    });
    Tensor::from_storage(i64::into_storage(idx), out_shape)
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
