//! Element types: the [`DType`] tag, the [`Element`] trait every stored type implements, and the
//! [`Float`] trait of the types CPU arithmetic runs in (f32, f64).

use std::fmt;

use half::{bf16, f16};

use crate::storage::CpuStorage;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: the default everywhere.
    F32,
    /// 64-bit float: CPU references and gradient checks.
    F64,
    /// bfloat16: GPU compute.
    BF16,
    /// IEEE half: GPU compute.
    F16,
    /// Bytes: images and masks.
    U8,
    /// 64-bit integers: labels, indices, timesteps.
    I64,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 6] = [
        DType::F32,
        DType::F64,
        DType::BF16,
        DType::F16,
        DType::U8,
        DType::I64,
    ];

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::BF16 | DType::F16 => 2,
            DType::U8 => 1,
        }
    }

    /// Whether the dtype holds floating-point values.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::U8 | DType::I64)
    }

    /// Short lowercase name: `f32`, `bf16`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::U8 => "u8",
            DType::I64 => "i64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type a tensor can store. Conversions go through f64, which holds every value of every
/// element type exactly except i64 beyond 2^53.
pub trait Element: Copy + Send + Sync + Default + fmt::Debug + PartialEq + 'static {
    /// The matching dtype tag.
    const DTYPE: DType;
    /// Converts from f64 (rounding to nearest, saturating for integers).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
    /// Borrows the storage's elements if they are of this type.
    fn slice(storage: &CpuStorage) -> Option<&[Self]>;
    /// Wraps a vector of this type as storage.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
}

macro_rules! element {
    ($t:ty, $variant:ident, $from:expr, $to:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            #[inline]
            fn from_f64(v: f64) -> Self {
                ($from)(v)
            }
            #[inline]
            fn to_f64(self) -> f64 {
                ($to)(self)
            }
            fn slice(storage: &CpuStorage) -> Option<&[Self]> {
                match storage {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
        }
    };
}

element!(f32, F32, |v: f64| v as f32, |x: f32| x as f64);
element!(f64, F64, |v: f64| v, |x: f64| x);
element!(bf16, BF16, bf16::from_f64, bf16::to_f64);
element!(f16, F16, f16::from_f64, f16::to_f64);
element!(u8, U8, |v: f64| v.round() as u8, |x: u8| x as f64);
element!(i64, I64, |v: f64| v.round() as i64, |x: i64| x as f64);

/// The float types CPU arithmetic is written for. Kernels are generic over it, so one piece of code
/// serves f32 and f64.
pub trait Float:
    Element
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::iter::Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Negative infinity (the identity of max).
    const NEG_INFINITY: Self;
    /// Positive infinity (the identity of min).
    const INFINITY: Self;
    /// e^x.
    fn exp(self) -> Self;
    /// ln x.
    fn ln(self) -> Self;
    /// √x.
    fn sqrt(self) -> Self;
    /// tanh x.
    fn tanh(self) -> Self;
    /// |x|.
    fn abs(self) -> Self;
    /// x^e.
    fn powf(self, e: Self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// The larger of two values.
    fn max(self, other: Self) -> Self;
    /// The smaller of two values.
    fn min(self, other: Self) -> Self;
}

/// tanh in f32 without libm's `tanhf` (which goes through `expm1f` and dominated the GELU of a
/// DiT's MLP): an odd polynomial below 0.625 (Cephes' coefficients, relative error ~1e-7), and
/// `1 - 2 / (e^{2|x|} + 1)` above, where there is no cancellation. Both are computed and one is
/// selected, so a loop over it has no branch and vectorises. Large |x| gives ±1, NaN stays NaN.
#[inline]
fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let p = (((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
        - 3.333_328e-1;
    let small = p * z * x + x;
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// e^x in f32 without libm's `expf` (a call per element that no loop can vectorise, under every
/// softmax, sigmoid, SiLU and GELU): Cephes' reduction `x = n·ln2 + r`, |r| ≤ ln2/2, a degree-7
/// polynomial for e^r, and 2^n built from its bits in two halves so that both ends of the range
/// over- and underflow as they should. Relative error below 3e-7; NaN stays NaN.
#[inline]
fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer (no branch, no libm call).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-104.0, 89.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // n as an integer, read from the bits of ROUND + n (n is small, so it sits in the low bits
    // of the mantissa): `n as i32` would saturate and map NaN to 0 lane by lane, which the
    // compiler cannot vectorise. A NaN input gives a NaN `e`, so any n leaves the result NaN.
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    e * pow2(half) * pow2(n - half)
}

macro_rules! float {
    ($t:ty, $exp:path, $erf:path, $tanh:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const INFINITY: Self = <$t>::INFINITY;
            #[inline]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
        }
    };
}

float!(f32, exp_f32, libm::erff, tanh_f32);
float!(f64, f64::exp, libm::erf, f64::tanh);

/// Runs `$body` with `$T` bound to the Rust element type of the dtype `$dtype`.
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::BF16 => {
                type $T = $crate::bf16;
                $body
            }
            $crate::DType::F16 => {
                type $T = $crate::f16;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_matches_f64_exp_everywhere() {
        let mut worst = 0f64;
        for i in -1_040_000..=887_000 {
            let x = i as f32 * 1e-4;
            let exact = (x as f64).exp();
            if exact < f32::MIN_POSITIVE as f64 {
                continue; // subnormal results: absolute error below 1.2e-38 is all that matters
            }
            let got = exp_f32(x) as f64;
            worst = worst.max((got - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(-100.0) < 1e-43);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!((exp_f32(88.7) as f64 / (88.7f32 as f64).exp() - 1.0).abs() < 3e-7);
    }

    #[test]
    fn tanh_f32_matches_f64_tanh_everywhere() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let exact = (x as f64).tanh();
            let got = tanh_f32(x) as f64;
            let err = (got - exact).abs() / exact.abs().max(1e-30);
            worst = worst.max(if exact == 0.0 { got.abs() } else { err });
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(tanh_f32(1e4), 1.0);
        assert_eq!(tanh_f32(-1e4), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(1e-30), 1e-30);
    }
}
