//! CPU kernels of the reductions of `ops/reduce.rs`, all accumulated in f64. A contiguous input
//! is read in place: each run of consecutive reduced dims, last run first, is folded as the
//! middle dim of a dense `[outer, reduced, inner]` block (a conv bias gradient, summing
//! `[N, C, H, W]` over N, H and W, is two such folds). Other views are copied with the reduced
//! dims permuted last, then folded row by row.

use rayon::prelude::*;

use crate::cpu::{contiguous_slice, float_op, simd};
use crate::layout::PAR_THRESHOLD;
use crate::ops::reduce::ReduceOp;
use crate::{Element, Float, Result, Tensor};

/// `$body` with `$identity` and `$merge` bound to the fold of `$op`: its identity and a closure
/// merging two partial results, written as a constant per variant so that it inlines into the
/// loops (a function pointer would be a call per element).
macro_rules! with_fold {
    ($op:expr, |$identity:ident, $merge:ident| $body:expr) => {
        match $op {
            ReduceOp::Sum => {
                let ($identity, $merge) = (0.0f64, |a: f64, b: f64| a + b);
                $body
            }
            ReduceOp::Max => {
                let ($identity, $merge) = (f64::NEG_INFINITY, f64::max);
                $body
            }
            ReduceOp::Min => {
                let ($identity, $merge) = (f64::INFINITY, f64::min);
                $body
            }
        }
    };
}

/// The fold of one contiguous row from `identity` by `merge`, over [`LANES`] partial results: one
/// running result is a chain of dependent operations (float addition is not associative, so the
/// compiler may not reorder it) that runs at the adder's latency; independent lanes vectorise.
#[inline(always)]
fn fold_row<T: Float>(row: &[T], identity: f64, merge: impl Fn(f64, f64) -> f64) -> f64 {
    let mut lanes = [identity; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, x) in lanes.iter_mut().zip(chunk) {
            *l = merge(*l, x.to_f64());
        }
    }
    let folded = lanes.into_iter().fold(identity, &merge);
    rest.iter().fold(folded, |a, x| merge(a, x.to_f64()))
}

/// Partial results of [`fold_row`]: one AVX-512 register of f64.
const LANES: usize = 8;

/// `op` over the middle dim of a dense `[outer, reduced, inner]` block, accumulating in f64
/// along unit-stride rows of `inner` (so the loop vectorises), or along the reduced rows
/// themselves when `inner` is 1; in parallel over `outer`, or over slices of the reduced dim when
/// there is one long reduction.
fn middle<T: Float>(op: ReduceOp, v: &[T], split: (usize, usize, usize)) -> Vec<f64> {
    with_fold!(op, |identity, merge| middle_by(v, split, identity, merge))
}

/// [`middle`] for the fold `identity`, `merge`.
fn middle_by<T: Float>(
    v: &[T],
    (outer, reduced, inner): (usize, usize, usize),
    identity: f64,
    merge: impl Fn(f64, f64) -> f64 + Sync + Copy,
) -> Vec<f64> {
    if reduced == 0 {
        return vec![identity; outer * inner];
    }
    let block = |rows: &[T]| -> Vec<f64> {
        simd(
            #[inline(always)]
            || {
                if inner == 1 {
                    return vec![fold_row(rows, identity, merge)];
                }
                let mut acc = vec![identity; inner];
                for row in rows.chunks(inner) {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a = merge(*a, x.to_f64());
                    }
                }
                acc
            },
        )
    };
    let big = v.len() >= PAR_THRESHOLD;
    if big && outer > 1 {
        v.par_chunks(reduced * inner)
            .with_min_len((PAR_THRESHOLD / (reduced * inner)).max(1))
            .flat_map_iter(block)
            .collect()
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
    }
}

/// `op` over `dims` (sorted, distinct) of the dense `v` of `shape`: the last run of consecutive
/// reduced dims is folded first, in place, then the next on the f64 partial results.
fn dense<T: Float>(op: ReduceOp, v: &[T], shape: &[usize], dims: &[usize]) -> Vec<f64> {
    let Some(&last) = dims.last() else {
        return v.iter().map(|x| x.to_f64()).collect();
    };
    let run = dims.len()
        - dims
            .iter()
            .rev()
            .zip((0..=last).rev())
            .take_while(|(d, e)| *d == e)
            .count();
    let first = dims[run];
    let split = (
        shape[..first].iter().product(),
        shape[first..=last].iter().product(),
        shape[last + 1..].iter().product(),
    );
    let folded = middle(op, v, split);
    let rest: Vec<usize> = [&shape[..first], &shape[last + 1..]].concat();
    if run == 0 {
        folded
    } else {
        dense(op, &folded, &rest, &dims[..run])
    }
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
    if let Some(range) = input.layout().contiguous_range() {
        let mut dims = dims.to_vec();
        dims.sort_unstable();
        dims.dedup();
        let out = float_op!(op.name(), input.cpu_storage(), |v: T| {
            let out = dense(op, &v[range], input.shape(), &dims);
            T::into_storage(out.into_iter().map(T::from_f64).collect())
        });
        return input.with_storage(out, out_shape);
    }
    let x = permuted;
    let out = float_op!(op.name(), x.cpu_storage(), |v: T| {
        let v = contiguous_slice(v, x.layout());
        let n_rows = out_shape.iter().product::<usize>();
        let out: Vec<T> = with_fold!(op, |identity, merge| {
            let row = |r: &[T]| {
                T::from_f64(simd(
                    #[inline(always)]
                    || fold_row(r, identity, merge),
                ))
            };
            if row_len == 0 {
                vec![T::ZERO; n_rows]
            } else if v.len() >= PAR_THRESHOLD {
                v.par_chunks(row_len).map(row).collect()
            } else {
                v.chunks(row_len).map(row).collect()
            }
        });
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
        // Several runs of reduced dims (a conv bias gradient), and a transposed view (the
        // permuted path), against a direct loop.
        let x = Tensor::randn(&[3, 4, 5, 6], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
        let v = x.to_vec::<f64>().unwrap();
        let mut want = [0.0; 4];
        let mut want_t = [0.0; 6 * 5];
        for (i, &e) in v.iter().enumerate() {
            want[(i / 30) % 4] += e;
            want_t[i % 30] += e;
        }
        for xs in [x.clone(), x.permute(&[0, 1, 3, 2]).unwrap()] {
            let got = xs.sum(&[0, 2, 3], false).unwrap().to_vec::<f64>().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9, "sum over N, H, W: {a} vs {b}");
            }
        }
        let got = x.sum(&[0, 1], false).unwrap().to_vec::<f64>().unwrap();
        for (a, b) in got.iter().zip(&want_t) {
            assert!((a - b).abs() < 1e-9, "sum over N, C: {a} vs {b}");
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
