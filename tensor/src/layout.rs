//! Shapes, strides and offsets: the [`Layout`] that makes views free, and the strided walk that
//! every CPU kernel uses to read a view without copying it.

use crate::{ensure_shape, Error, Result};

/// How a tensor's logical elements map onto its storage: element `[i0, i1, ..]` lives at
/// `offset + i0 * strides[0] + i1 * strides[1] + ..`. Broadcast dimensions have stride 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// The row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The number of elements of `shape`, or a shape error naming `op` when the shape is too large
/// to address: the product of its sizes (zeros counted as ones, so that strides fit too) times
/// the widest element (8 bytes) must fit in `isize`, as a `Vec` requires. Constructors check
/// shapes that come from files and flags with it, so a huge shape is an error, not a panic.
pub fn checked_elem_count(op: &'static str, shape: &[usize]) -> Result<usize> {
    let addressable = shape
        .iter()
        .try_fold(8usize, |acc, &d| acc.checked_mul(d.max(1)))
        .is_some_and(|bytes| bytes <= isize::MAX as usize);
    ensure_shape!(
        addressable,
        op,
        "shape {shape:?} has too many elements to address"
    );
    Ok(shape.iter().product())
}

/// The shape two shapes broadcast to (numpy rules: align right, sizes equal or 1).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    format!("shapes {a:?} and {b:?} do not broadcast"),
                ))
            }
        };
    }
    Ok(out)
}

impl Layout {
    /// The contiguous row-major layout of `shape`.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A layout from its parts (no checks: the caller guarantees it stays inside the storage).
    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// The storage index of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of logical elements.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the elements are laid out row-major with no gaps (from `offset` on).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The range of storage indices a contiguous layout covers.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous()
            .then(|| self.offset..self.offset + self.elem_count())
    }

    /// The view of this layout broadcast to `shape`.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Layout> {
        let n = shape.len();
        ensure_shape!(
            n >= self.shape.len(),
            "broadcast_as",
            "cannot broadcast {:?} to the smaller rank {:?}",
            self.shape,
            shape
        );
        let lead = n - self.shape.len();
        let mut strides = vec![0; n];
        for i in lead..n {
            let (d, s) = (self.shape[i - lead], self.strides[i - lead]);
            if d == shape[i] {
                strides[i] = s;
            } else if d != 1 {
                return Err(Error::shape(
                    "broadcast_as",
                    format!("cannot broadcast {:?} to {:?}", self.shape, shape),
                ));
            }
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// The view with dimensions reordered: output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let n = self.shape.len();
        let mut seen = vec![false; n];
        let valid = dims.len() == n
            && dims
                .iter()
                .all(|&d| d < n && !std::mem::replace(&mut seen[d], true));
        ensure_shape!(
            valid,
            "permute",
            "{dims:?} is not a permutation of the {n} dims of {:?}",
            self.shape
        );
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    /// The view of `len` elements from `start` along `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        ensure_shape!(
            dim < self.shape.len(),
            "narrow",
            "dim {dim} out of range for shape {:?}",
            self.shape
        );
        ensure_shape!(
            start + len <= self.shape[dim],
            "narrow",
            "range {start}..{} out of bounds for dim {dim} of shape {:?}",
            start + len,
            self.shape
        );
        let mut out = self.clone();
        out.shape[dim] = len;
        if len > 0 {
            out.offset += start * self.strides[dim];
        }
        Ok(out)
    }

    /// The view with a size-1 dimension inserted at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Layout> {
        ensure_shape!(
            dim <= self.shape.len(),
            "unsqueeze",
            "dim {dim} out of range for shape {:?}",
            self.shape
        );
        let mut out = self.clone();
        let stride = if dim < self.shape.len() {
            self.strides[dim] * self.shape[dim]
        } else {
            1
        };
        out.shape.insert(dim, 1);
        out.strides.insert(dim, stride);
        Ok(out)
    }

    /// The view with the size-1 dimension `dim` removed.
    pub fn squeeze(&self, dim: usize) -> Result<Layout> {
        ensure_shape!(
            dim < self.shape.len() && self.shape[dim] == 1,
            "squeeze",
            "dim {dim} of shape {:?} is not of size 1",
            self.shape
        );
        let mut out = self.clone();
        out.shape.remove(dim);
        out.strides.remove(dim);
        Ok(out)
    }

    /// The same elements viewed with `shape`, without copying, when the strides allow it
    /// (always for contiguous layouts); `None` when a copy is needed. The element count must match.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() || self.elem_count() == 0 {
            return Some(Layout {
                shape: shape.to_vec(),
                strides: contiguous_strides(shape),
                offset: self.offset,
            });
        }
        // Walk old dims from the innermost, in chunks that are contiguous within themselves; each
        // chunk must be split exactly by a run of new dims, which then take strides from the chunk.
        let (old, old_strides) = (&self.shape, &self.strides);
        let mut strides = vec![0; shape.len()];
        let mut view_d = shape.len();
        let (mut chunk_stride, mut chunk_numel, mut view_numel) =
            (old_strides[old.len() - 1], 1, 1);
        for d in (0..old.len()).rev() {
            chunk_numel *= old[d];
            let chunk_ends =
                d == 0 || (old[d - 1] != 1 && old_strides[d - 1] != chunk_numel * chunk_stride);
            if chunk_ends {
                while view_d > 0 && (view_numel < chunk_numel || shape[view_d - 1] == 1) {
                    view_d -= 1;
                    strides[view_d] = view_numel * chunk_stride;
                    view_numel *= shape[view_d];
                }
                if view_numel != chunk_numel {
                    return None;
                }
                if d > 0 {
                    (chunk_stride, chunk_numel, view_numel) = (old_strides[d - 1], 1, 1);
                }
            }
        }
        (view_d == 0).then(|| Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Storage index of the element at multi-index `idx`.
    pub fn index_of(&self, idx: &[usize]) -> usize {
        self.offset
            + idx
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }
}

/// A walk over one or more layouts of the same shape in row-major order, as rows: each row is
/// `len` elements with a fixed stride per operand. Dims that are contiguous in every operand are
/// merged first, so a contiguous tensor is a single row.
#[derive(Clone, Debug)]
pub(crate) struct Rows<const N: usize> {
    outer_shape: Vec<usize>,
    outer_strides: Vec<[usize; N]>,
    offsets: [usize; N],
    /// Elements per row.
    pub len: usize,
    /// Stride within a row, per operand.
    pub stride: [usize; N],
    /// Number of rows.
    pub count: usize,
}

impl<const N: usize> Rows<N> {
    /// The walk over `layouts`, which must all have the same shape.
    pub fn new(layouts: [&Layout; N]) -> Self {
        let shape = layouts[0].shape();
        debug_assert!(layouts.iter().all(|l| l.shape() == shape));
        // Merge adjacent dims (from the innermost) where every operand allows it; drop size-1 dims.
        let mut dims: Vec<(usize, [usize; N])> = Vec::new();
        for d in (0..shape.len()).rev() {
            if shape[d] == 1 {
                continue;
            }
            let s: [usize; N] = std::array::from_fn(|k| layouts[k].strides()[d]);
            if let Some((inner, inner_s)) = dims.last_mut() {
                if (0..N).all(|k| s[k] == inner_s[k] * *inner) {
                    *inner *= shape[d];
                    continue;
                }
            }
            dims.push((shape[d], s));
        }
        dims.reverse();
        let (len, stride) = dims.pop().unwrap_or((1, [0; N]));
        let count = dims.iter().map(|d| d.0).product();
        Rows {
            outer_shape: dims.iter().map(|d| d.0).collect(),
            outer_strides: dims.iter().map(|d| d.1).collect(),
            offsets: std::array::from_fn(|k| layouts[k].offset()),
            len: if shape.contains(&0) { 0 } else { len },
            stride,
            count: if shape.contains(&0) { 0 } else { count },
        }
    }

    /// Storage index of the first element of row `row`, per operand.
    #[inline]
    pub fn start(&self, mut row: usize) -> [usize; N] {
        let mut out = self.offsets;
        for d in (0..self.outer_shape.len()).rev() {
            let i = row % self.outer_shape[d];
            row /= self.outer_shape[d];
            for k in 0..N {
                out[k] += i * self.outer_strides[d][k];
            }
        }
        out
    }
}

/// Minimum number of elements before a kernel splits its work across threads.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_views_permuted_groups_without_copy() {
        // [2, 3, 4] permuted to [3, 2, 4]: merging (2, 4) is impossible, splitting 4 into 2x2 is fine.
        let l = Layout::contiguous(&[2, 3, 4]).permute(&[1, 0, 2]).unwrap();
        let split = l.reshape(&[3, 2, 2, 2]).unwrap();
        assert_eq!(split.strides(), &[4, 12, 2, 1]);
        assert!(l.reshape(&[6, 4]).is_none());
        assert!(l.reshape(&[3, 8]).is_none());
        let t = Layout::contiguous(&[4, 6]).permute(&[1, 0]).unwrap();
        assert_eq!(t.reshape(&[6, 1, 4]).unwrap().strides(), &[1, 24, 6]);
    }

    #[test]
    fn rows_merge_contiguous_dims() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let r = Rows::new([&l]);
        assert_eq!((r.count, r.len, r.stride), (1, 24, [1]));
        let p = l.permute(&[0, 2, 1]).unwrap();
        let r = Rows::new([&p]);
        assert_eq!((r.count, r.len, r.stride), (8, 3, [4]));
        assert_eq!(r.start(5), [13]);
    }
}
