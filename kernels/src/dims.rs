//! Strided views as kernels see them, and the element types they read.

use cudarc::driver::DeviceRepr;

use crate::{Error, Result};

/// The most dims a strided kernel argument holds.
pub const MAX_DIMS: usize = 8;

/// A strided view passed by value to a kernel: element `i` (row-major over `shape`) lives at
/// `offset + Σ index_k · stride_k` elements from the buffer's start. Mirrors `struct Dims` in
/// `cu/common.cuh` field by field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    rank: i32,
    pad: i32,
    offset: i64,
    shape: [i64; MAX_DIMS],
    stride: [i64; MAX_DIMS],
}

// SAFETY: `Dims` is `repr(C)` plain data with the layout of the C struct the kernels declare.
unsafe impl DeviceRepr for Dims {}

impl Dims {
    /// A view of `shape` with `strides` (in elements) from element `offset`. Broadcast dims have
    /// stride 0. Dims of size 1 are dropped and neighbours that are contiguous with each other
    /// merged, so few kernels walk more than two or three dims.
    pub fn new(shape: &[usize], strides: &[usize], offset: usize) -> Result<Dims> {
        if shape.len() != strides.len() {
            return Err(Error::msg(format!(
                "Dims: shape {shape:?} and strides {strides:?} differ in length"
            )));
        }
        let mut dims: Vec<(usize, usize)> = Vec::with_capacity(shape.len());
        for (&n, &s) in shape.iter().zip(strides) {
            if n == 1 {
                continue;
            }
            match dims.last_mut() {
                Some((ln, ls)) if *ls == s * n => {
                    *ln *= n;
                    *ls = s;
                }
                _ => dims.push((n, s)),
            }
        }
        if dims.len() > MAX_DIMS {
            return Err(Error::msg(format!(
                "view of shape {shape:?} strides {strides:?}: at most {MAX_DIMS} non-mergeable dims \
                 on CUDA, got {}",
                dims.len()
            )));
        }
        let mut d = Dims {
            rank: dims.len() as i32,
            pad: 0,
            offset: offset as i64,
            shape: [1; MAX_DIMS],
            stride: [0; MAX_DIMS],
        };
        for (k, (n, s)) in dims.into_iter().enumerate() {
            d.shape[k] = n as i64;
            d.stride[k] = s as i64;
        }
        Ok(d)
    }

    /// Whether every offset of the view is a multiple of `n` elements: its offset and strides are.
    pub fn offsets_multiple_of(&self, n: i64) -> bool {
        self.offset % n == 0 && self.stride[..self.rank as usize].iter().all(|s| s % n == 0)
    }

    /// `n` contiguous elements from element `offset`.
    pub fn contiguous(n: usize, offset: usize) -> Dims {
        Dims::new(&[n], &[1], offset).expect("one dim always fits")
    }
}

/// The element type of a device buffer, as the kernels name it (the suffix of kernel names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    /// f32
    F32,
    /// f64
    F64,
    /// bf16
    BF16,
    /// f16
    F16,
    /// u8
    U8,
    /// i64
    I64,
}

impl Elem {
    /// The kernel-name suffix (`f32`, `bf16`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F64 => "f64",
            Elem::BF16 => "bf16",
            Elem::F16 => "f16",
            Elem::U8 => "u8",
            Elem::I64 => "i64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F64 | Elem::I64 => 8,
            Elem::BF16 | Elem::F16 => 2,
            Elem::U8 => 1,
        }
    }

    /// Whether the kernels compute with it (the float types).
    pub fn is_float(self) -> bool {
        !matches!(self, Elem::U8 | Elem::I64)
    }

    /// An error naming `op` unless this is a float type (the only ones the arithmetic kernels
    /// are built for).
    pub fn float_only(self, op: &str) -> Result<()> {
        if self.is_float() {
            Ok(())
        } else {
            Err(Error::msg(format!(
                "{op} on CUDA: {} elements, expected a float type",
                self.suffix()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_views_merge_into_one_dim() {
        let d = Dims::new(&[2, 3, 4], &[12, 4, 1], 5).unwrap();
        assert_eq!((d.rank, d.shape[0], d.stride[0], d.offset), (1, 24, 1, 5));
    }

    #[test]
    fn transposes_and_broadcasts_keep_their_dims() {
        let d = Dims::new(&[3, 1, 2], &[1, 0, 3], 0).unwrap();
        assert_eq!(d.rank, 2);
        assert_eq!((&d.shape[..2], &d.stride[..2]), (&[3, 2][..], &[1, 3][..]));
        let b = Dims::new(&[4, 5], &[0, 1], 0).unwrap();
        assert_eq!((b.rank, &b.stride[..2]), (2, &[0, 1][..]));
    }

    #[test]
    fn offsets_multiple_of_looks_at_offset_and_kept_strides() {
        // The size-1 dim's stride 3 is dropped, so it does not count.
        let d = Dims::new(&[2, 1, 4], &[64, 3, 8], 16).unwrap();
        assert!(d.offsets_multiple_of(8));
        assert!(!Dims::new(&[2, 4], &[64, 8], 4)
            .unwrap()
            .offsets_multiple_of(8));
        assert!(!Dims::new(&[2, 4], &[60, 8], 0)
            .unwrap()
            .offsets_multiple_of(8));
    }

    #[test]
    fn too_many_dims_is_an_error() {
        let shape = [2; 9];
        let strides: Vec<usize> = (0..9).map(|k| 1 << (2 * k)).collect();
        let err = Dims::new(&shape, &strides, 0).unwrap_err();
        assert!(err.0.contains("at most 8"), "{err}");
    }
}
