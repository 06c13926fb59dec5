//! Timestep respacing as DiT's `space_timesteps` and `SpacedDiffusion`: keep a subset of the
//! original steps and rebuild betas from the kept ᾱ, so that a 1000-step model samples in 250 or 50.
//! A [`Respacing`] is the parsed form of the respacing text, and also says which sampler it means.

use std::collections::BTreeSet;

use tensor::{Error, Result};

/// A respacing, parsed once from its text: which of the original steps a sampler visits, and,
/// for `ddimN`, that the sampler is DDIM rather than ancestral DDPM. The text is exact, without
/// spaces anywhere (as every other string option of a config): `" ddim5 "` is refused, where it
/// was once DDPM to the choice of sampler and DDIM steps to the respacing.
///
/// ```
/// use train::diffusion::respace::Respacing;
/// let r: Respacing = "ddim50".parse().unwrap();
/// assert!(r.is_ddim() && r.timesteps(1000).unwrap().len() == 50);
/// assert_eq!("10,15,20".parse::<Respacing>().unwrap(), Respacing::Sections(vec![10, 15, 20]));
/// assert!(" ddim5 ".parse::<Respacing>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Respacing {
    /// `""`: every step (ancestral DDPM).
    All,
    /// `"250"` or `"10,15,20"`: the steps are cut into as many equal sections as counts, and each
    /// section is strided (fractionally, rounded half to even as Python's `round`) to its count
    /// (ancestral DDPM).
    Sections(Vec<usize>),
    /// `"ddimN"`: the integer stride of the DDIM paper giving exactly N steps from 0 (DDIM).
    Ddim(usize),
}

impl std::str::FromStr for Respacing {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Respacing> {
        let number = |s: &str| -> Result<usize> {
            match s.parse() {
                Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(Error::msg(format!(
                    "sampler {spec:?}: expected ddimN (DDIM in N steps), N or N,N,... (ancestral \
                     DDPM over N steps, or over sections of the process) or \"\" (every step), \
                     without spaces"
                ))),
            }
        };
        if spec.is_empty() {
            return Ok(Respacing::All);
        }
        match spec.strip_prefix("ddim") {
            Some(n) => Ok(Respacing::Ddim(number(n)?)),
            None => Ok(Respacing::Sections(
                spec.split(',').map(number).collect::<Result<_>>()?,
            )),
        }
    }
}

impl std::fmt::Display for Respacing {
    /// The text it parses from (`ddim050` prints as `ddim50`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Respacing::All => Ok(()),
            Respacing::Ddim(n) => write!(f, "ddim{n}"),
            Respacing::Sections(counts) => {
                let counts: Vec<String> = counts.iter().map(usize::to_string).collect();
                write!(f, "{}", counts.join(","))
            }
        }
    }
}

impl Respacing {
    /// Whether the sampler is DDIM (`ddimN`) rather than ancestral DDPM.
    pub fn is_ddim(&self) -> bool {
        matches!(self, Respacing::Ddim(_))
    }

    /// The original steps (sorted) kept out of `num_timesteps`.
    pub fn timesteps(&self, num_timesteps: usize) -> Result<Vec<usize>> {
        if num_timesteps == 0 {
            return Err(Error::msg(
                "space_timesteps: the original process has no steps",
            ));
        }
        let counts = match self {
            Respacing::All => return Ok((0..num_timesteps).collect()),
            Respacing::Ddim(desired) => {
                // The reference tries strides 1..T-1 and takes the first giving `desired` steps.
                return (1..num_timesteps.max(2))
                    .find(|&stride| num_timesteps.div_ceil(stride) == *desired)
                    .map(|stride| (0..num_timesteps).step_by(stride).collect())
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "space_timesteps: cannot create exactly {desired} steps out of {num_timesteps} with an integer stride"
                        ))
                    });
            }
            Respacing::Sections(counts) => counts,
        };
        let size_per = num_timesteps / counts.len();
        let extra = num_timesteps % counts.len();
        let mut start = 0;
        let mut steps = BTreeSet::new();
        for (i, &count) in counts.iter().enumerate() {
            let size = size_per + usize::from(i < extra);
            if size < count {
                return Err(Error::msg(format!(
                    "space_timesteps: cannot divide a section of {size} steps into {count}"
                )));
            }
            let stride = if count <= 1 {
                1.0
            } else {
                (size - 1) as f64 / (count - 1) as f64
            };
            // Accumulated, not multiplied: the reference adds the stride, and its rounding follows.
            let mut cur = 0.0f64;
            for _ in 0..count {
                steps.insert(start + cur.round_ties_even() as usize);
                cur += stride;
            }
            start += size;
        }
        if steps.is_empty() {
            return Err(Error::msg(format!(
                "space_timesteps: \"{self}\" keeps no step"
            )));
        }
        Ok(steps.into_iter().collect())
    }
}

/// The original steps (sorted) kept by the respacing `spec` (see [`Respacing`]) out of
/// `num_timesteps`.
pub fn space_timesteps(num_timesteps: usize, spec: &str) -> Result<Vec<usize>> {
    spec.parse::<Respacing>()?.timesteps(num_timesteps)
}

/// The betas of the process that keeps only `use_timesteps` (sorted, as [`space_timesteps`]
/// returns) of one with cumulative products `alphas_cumprod`: β'_k = 1 − ᾱ_{s_k} / ᾱ_{s_{k−1}}.
/// Returns the betas and the map from new index k to original step s_k.
pub fn respaced_betas(
    alphas_cumprod: &[f64],
    use_timesteps: &[usize],
) -> Result<(Vec<f64>, Vec<usize>)> {
    if let Some(&bad) = use_timesteps.iter().find(|&&s| s >= alphas_cumprod.len()) {
        return Err(Error::msg(format!(
            "respace: step {bad} is out of range for {} steps",
            alphas_cumprod.len()
        )));
    }
    let keep: BTreeSet<usize> = use_timesteps.iter().copied().collect();
    let mut last = 1.0;
    let mut betas = Vec::with_capacity(keep.len());
    for &s in &keep {
        betas.push(1.0 - alphas_cumprod[s] / last);
        last = alphas_cumprod[s];
    }
    Ok((betas, keep.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_as_the_reference() {
        // The reference's docstring example: 300 steps, sections of 10, 15, 20.
        let s = space_timesteps(300, "10,15,20").unwrap();
        assert_eq!(s.len(), 45);
        assert_eq!(&s[..3], &[0, 11, 22]);
        assert_eq!(s[9], 99);
        assert_eq!(s[10], 100);
        assert_eq!(*s.last().unwrap(), 299);
        let s = space_timesteps(1000, "250").unwrap();
        assert_eq!((s.len(), s[0], s[1], s[2], s[249]), (250, 0, 4, 8, 999));
        assert_eq!(space_timesteps(1000, "").unwrap().len(), 1000);
        // Uneven sections: the first `extra` sections get one more step.
        let s = space_timesteps(10, "2,2,2").unwrap();
        assert_eq!(s, vec![0, 3, 4, 6, 7, 9]);
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        // 5 steps out of 10: stride 9/4 = 2.25 -> 0, 2.25, 4.5, 6.75, 9 -> 0, 2, 4 (not 5), 7, 9.
        assert_eq!(space_timesteps(10, "5").unwrap(), vec![0, 2, 4, 7, 9]);
    }

    #[test]
    fn ddim_strides_exactly() {
        let s = space_timesteps(1000, "ddim50").unwrap();
        assert_eq!(s.len(), 50);
        assert!(s.iter().enumerate().all(|(i, &v)| v == 20 * i));
        assert_eq!(space_timesteps(1000, "ddim1000").unwrap().len(), 1000);
        assert!(space_timesteps(1000, "ddim999").is_err());
        assert!(space_timesteps(100, "200").is_err());
        assert!(space_timesteps(100, "ten").is_err());
    }

    #[test]
    fn respacings_parse_exactly_and_print_back() {
        for (text, parsed) in [
            ("", Respacing::All),
            ("ddim5", Respacing::Ddim(5)),
            ("250", Respacing::Sections(vec![250])),
            ("10,15,20", Respacing::Sections(vec![10, 15, 20])),
        ] {
            let r: Respacing = text.parse().unwrap();
            assert_eq!((&r, r.to_string().as_str()), (&parsed, text));
            assert_eq!(r.is_ddim(), text.starts_with("ddim"));
        }
        // Spaces anywhere, signs, empty counts and other words are refused, naming the text.
        for bad in [
            " ddim5 ", "ddim5 ", " 250", "ddim 5", "10, 15", "+5", "ddim", "ddim-5", "5,", ",5",
            "DDIM5", "ten",
        ] {
            let err = bad.parse::<Respacing>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn respaced_betas_keep_alphas_cumprod() {
        let betas = [0.1, 0.2, 0.3, 0.4];
        let ac: Vec<f64> = betas
            .iter()
            .scan(1.0, |a, b| {
                *a *= 1.0 - b;
                Some(*a)
            })
            .collect();
        let (new, map) = respaced_betas(&ac, &[3, 1]).unwrap();
        assert_eq!(map, vec![1, 3]);
        assert!((1.0 - new[0] - ac[1]).abs() < 1e-15);
        assert!(((1.0 - new[0]) * (1.0 - new[1]) - ac[3]).abs() < 1e-15);
        assert!(respaced_betas(&ac, &[4]).is_err());
    }
}
