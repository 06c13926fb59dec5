//! Embedding tables and sinusoidal timestep embeddings.

use autograd::Var;
use tensor::{DType, Result, Tensor};

use crate::params::{join, ParamStore};

/// A lookup table `[num, dim]`.
#[derive(Clone, Debug)]
pub struct Embedding {
    weight: String,
}

impl Embedding {
    /// Adds `prefix.weight` drawn from N(0, std²) (PyTorch's default std is 1).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        num: usize,
        dim: usize,
        std: f64,
    ) -> Result<Self> {
        ps.normal(&join(prefix, "weight"), &[num, dim], std)?;
        Ok(Embedding {
            weight: join(prefix, "weight"),
        })
    }

    /// Rows for `ids` (i64, any shape): `ids.shape + [dim]`.
    pub fn forward(&self, ps: &ParamStore, ids: &Tensor) -> Result<Var> {
        let table = ps.weight(&self.weight)?;
        // Labels are made on the host; the table may live on a GPU.
        table.embedding(&ids.to_device(table.value().device())?)
    }
}

/// The sinusoidal embedding of diffusers' `get_timestep_embedding`: frequencies
/// `exp(-ln(max_period) · i / (half - shift))`, `[sin, cos]` halves (`[cos, sin]` with
/// `flip_sin_to_cos`), zero-padded when `dim` is odd. `t`: `[N]` of any numeric dtype. Computed
/// in f64; see [`sinusoidal_embedding_f32`] for the reference's float32 arithmetic.
pub fn sinusoidal_embedding(
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    max_period: f64,
    dtype: DType,
) -> Result<Tensor> {
    embed_rounded(
        t,
        dim,
        flip_sin_to_cos,
        freq_shift,
        max_period,
        dtype,
        |x| x,
    )
}

/// [`sinusoidal_embedding`] with every intermediate rounded to f32, as PyTorch computes it
/// (diffusers builds the embedding in float32 whatever the model's dtype, then casts): with
/// timesteps near 1000 the f32 argument `t · freq` is off by up to ~3e-5, so a float64 model
/// matches its float64 reference only with this rounding.
pub fn sinusoidal_embedding_f32(
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    max_period: f64,
    dtype: DType,
) -> Result<Tensor> {
    embed_rounded(
        t,
        dim,
        flip_sin_to_cos,
        freq_shift,
        max_period,
        dtype,
        |x| x as f32 as f64,
    )
}

/// The embedding with `r` applied after every arithmetic step.
fn embed_rounded(
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    max_period: f64,
    dtype: DType,
    r: impl Fn(f64) -> f64,
) -> Result<Tensor> {
    let half = dim / 2;
    let t = t.to_f64_vec()?;
    let (scale, denom) = (r(-(max_period.ln())), r(half as f64 - freq_shift));
    let freqs: Vec<f64> = (0..half)
        .map(|i| r(r(r(i as f64 * scale) / denom).exp()))
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in &t {
        let (sin, cos) = freqs
            .iter()
            .map(|f| {
                let (s, c) = r(r(ti) * f).sin_cos();
                (r(s), r(c))
            })
            .unzip::<f64, f64, Vec<_>, Vec<_>>();
        let (first, second) = if flip_sin_to_cos {
            (cos, sin)
        } else {
            (sin, cos)
        };
        out.extend(first.into_iter().chain(second));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, &[t.len(), dim])?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_embedding_rounds_like_float32() {
        let t = Tensor::from_vec(vec![711i64], &[1]).unwrap();
        let exact = sinusoidal_embedding(&t, 32, true, 0.0, 1e4, DType::F64).unwrap();
        let rounded = sinusoidal_embedding_f32(&t, 32, true, 0.0, 1e4, DType::F64).unwrap();
        let (e, r) = (
            exact.to_vec::<f64>().unwrap(),
            rounded.to_vec::<f64>().unwrap(),
        );
        assert!(r.iter().all(|&v| v == v as f32 as f64));
        let max_diff = e
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(max_diff > 1e-7 && max_diff < 1e-4, "{max_diff}");
    }

    #[test]
    fn dit_embedding_is_cos_first() {
        let t = Tensor::from_vec(vec![0i64, 10], &[2]).unwrap();
        // DiT's form: cos first, no frequency shift.
        let e = sinusoidal_embedding(&t, 4, true, 0.0, 10000.0, DType::F64)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        // t = 0: cos = 1, sin = 0; t = 10: freqs [1, 0.01].
        assert_eq!(&e[..4], &[1.0, 1.0, 0.0, 0.0]);
        let expected = [10f64.cos(), 0.1f64.cos(), 10f64.sin(), 0.1f64.sin()];
        assert!(
            e[4..]
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-12),
            "{e:?}"
        );
    }
}
