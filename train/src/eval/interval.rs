//! The numbers a study reports for a metric measured over several seeds: the mean and the 95%
//! confidence interval of that mean, `mean ± t_{0.975, n-1} · s / √n` with `s` the sample
//! standard deviation and `t` Student's t quantile with n − 1 degrees of freedom.
//!
//! [`Interval`] prints as a table cell (`2.33 ± 3.79`); [`markdown_table`] lays such cells out.
//! One seed gives no interval: it is reported as undefined (`2.33 (n = 1, no interval)`), never as
//! one of zero width.

use std::fmt;

use tensor::{Error, Result};

/// The confidence level of [`Interval`].
pub const CONFIDENCE: f64 = 0.95;

/// The mean of values over seeds, with the 95% confidence interval of the mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The mean.
    pub mean: f64,
    /// How many values (seeds).
    pub n: usize,
    /// The sample standard deviation (n − 1 in the denominator); `None` for one value.
    pub std: Option<f64>,
    /// Half the width of the interval, `t_{0.975, n-1} · std / √n`; `None` for one value, where
    /// the interval is undefined.
    pub half_width: Option<f64>,
}

impl Interval {
    /// The mean and 95% interval of `values`. An error for no values or one that is not finite
    /// (a diverged seed must be dealt with, not averaged in).
    pub fn of(values: &[f64]) -> Result<Interval> {
        if values.is_empty() {
            return Err(Error::msg("confidence interval of no values"));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::msg(format!(
                "confidence interval: value {i} of {} is {v}, not a finite number",
                values.len()
            )));
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        let half_width =
            std.map(|s| t_quantile(0.5 + CONFIDENCE / 2.0, (n - 1) as f64) * s / (n as f64).sqrt());
        Ok(Interval {
            mean,
            n,
            std,
            half_width,
        })
    }

    /// The lower end of the interval, if it is defined.
    pub fn lo(&self) -> Option<f64> {
        self.half_width.map(|h| self.mean - h)
    }

    /// The upper end of the interval, if it is defined.
    pub fn hi(&self) -> Option<f64> {
        self.half_width.map(|h| self.mean + h)
    }
}

/// `2.33 ± 3.79`, or `2.33 (n = 1, no interval)`. Without a precision (`{:.4}` sets one) the
/// half-width gets three significant digits and the mean as many decimals, so small metrics
/// (KID ~ 1e-3) do not print as zeros.
impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = match self.half_width {
            Some(h) if h > 0.0 => h,
            _ => self.mean.abs(),
        };
        let decimals = f.precision().unwrap_or_else(|| {
            if scale > 0.0 && scale.is_finite() {
                (2.0 - scale.log10().floor()).clamp(0.0, 12.0) as usize
            } else {
                2
            }
        });
        match self.half_width {
            Some(h) => write!(f, "{:.*} ± {:.*}", decimals, self.mean, decimals, h),
            None => write!(
                f,
                "{:.*} (n = {}, no interval)",
                decimals, self.mean, self.n
            ),
        }
    }
}

/// A markdown table: a header row of `columns` (the first names the row labels), then one row
/// per `(label, cells)`; `|` in labels is escaped. An error if a row has the wrong number of cells.
pub fn markdown_table(columns: &[&str], rows: &[(&str, &[Interval])]) -> Result<String> {
    let escape = |s: &str| s.replace('|', "\\|");
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut out = line(columns.iter().map(|c| escape(c)).collect());
    out += &line(columns.iter().map(|_| "---".to_string()).collect());
    for (label, cells) in rows {
        if cells.len() + 1 != columns.len() {
            return Err(Error::msg(format!(
                "markdown table: row `{label}` has {} cells, the header {} columns after the label",
                cells.len(),
                columns.len().saturating_sub(1)
            )));
        }
        let row = std::iter::once(escape(label)).chain(cells.iter().map(|c| c.to_string()));
        out += &line(row.collect());
    }
    Ok(out)
}

/// The `p` quantile of Student's t distribution with `df` degrees of freedom (not necessarily
/// an integer): the `t` with `P(T ≤ t) = p`. NaN unless `0 < p < 1` and `df > 0`.
///
/// Found by bisection on [`t_cdf`] to the last bits of an f64, which is exact enough for any
/// `df` and cheap next to what a study measures.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && df > 0.0) {
        return f64::NAN;
    }
    if p <= 0.5 {
        return if p == 0.5 {
            0.0
        } else {
            -t_quantile(1.0 - p, df)
        };
    }
    // Bracket: P(T ≤ 0) = 1/2 ≤ p, then double until the upper end passes p.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while t_cdf(hi, df) < p {
        lo = hi;
        hi *= 2.0;
        if !hi.is_finite() {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `P(T ≤ t)` for Student's t with `df` degrees of freedom:
/// `1 − I_x(df/2, 1/2) / 2` for `t ≥ 0`, with `x = df / (df + t²)`.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / (df + t * t), 0.5 * df, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 ≤ x ≤ 1`, from its
/// continued fraction (evaluated with the modified Lentz method), which converges fast for
/// `x < (a + 1) / (a + b + 2)`; above that, `I_x(a, b) = 1 − I_{1−x}(b, a)`.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    let ln_front = a * x.ln() + b * (1.0 - x).ln() - ln_beta(a, b);
    // I_x(a, b) = front / a · 1 / (1 + d1 / (1 + d2 / (1 + ...))), with
    // d_{2m+1} = −(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and d_{2m} = m(b−m) x / ((a+2m−1)(a+2m)).
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (mut f, mut c, mut d) = (TINY, TINY, 0.0);
    for j in 1..=10_000 {
        let numerator = if j == 1 {
            1.0
        } else {
            let k = j - 1;
            let m = (k / 2) as f64;
            if k % 2 == 1 {
                -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
            } else {
                m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
            }
        };
        d = 1.0 / guard(1.0 + numerator * d);
        c = guard(1.0 + numerator / c);
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (ln_front.exp() / a * f).clamp(0.0, 1.0)
}

/// `ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b)`.
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln Γ(x)` for `x > 0`: Stirling's series at `x + k ≥ 10`, brought back down with
/// `Γ(x) = Γ(x + k) / (x (x+1) ... (x+k−1))`. The series' next term is below 1e-14 there.
fn ln_gamma(x: f64) -> f64 {
    let mut z = x;
    let mut shift = 0.0;
    while z < 10.0 {
        shift += z.ln();
        z += 1.0;
    }
    let (z2, ln_2pi) = (z * z, (2.0 * std::f64::consts::PI).ln());
    // Bernoulli terms B_2k / (2k (2k−1) z^(2k−1)).
    let series = (1.0 / 12.0
        - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / (1188.0 * z2)) / z2) / z2) / z2)
        / z;
    (z - 0.5) * z.ln() - z + 0.5 * ln_2pi + series - shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_published_tables() {
        // Two-sided 95% (p = 0.975) and 99% (p = 0.995) values, to the 6 decimals tables give.
        for (p, df, t) in [
            (0.975, 1.0, 12.706205),
            (0.975, 2.0, 4.302653),
            (0.975, 4.0, 2.776445),
            (0.975, 29.0, 2.045230),
            (0.975, 1000.0, 1.962339),
            (0.995, 10.0, 3.169273),
            (0.95, 5.0, 2.015048),
        ] {
            let q = t_quantile(p, df);
            assert!((q - t).abs() < 1e-6, "t_({p}, {df}) = {q}, expected {t}");
            assert!((t_quantile(1.0 - p, df) + t).abs() < 1e-6);
        }
        assert_eq!(t_quantile(0.5, 3.0), 0.0);
        assert!(t_quantile(1.0, 3.0).is_nan() && t_quantile(0.9, 0.0).is_nan());
    }

    #[test]
    fn t_cdf_matches_closed_forms() {
        // df = 1 is the Cauchy distribution, df = 2 has F(t) = 1/2 + t / (2 √(2 + t²)).
        for t in [-30.0, -2.5, -0.3, 0.0, 0.7, 4.0, 100.0] {
            let cauchy = 0.5 + f64::atan(t) / std::f64::consts::PI;
            assert!((t_cdf(t, 1.0) - cauchy).abs() < 1e-13, "t = {t}");
            let df2 = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
            assert!((t_cdf(t, 2.0) - df2).abs() < 1e-13, "t = {t}");
        }
        // ln Γ at known points: Γ(1/2) = √π, Γ(5) = 24, Γ(0.1) = 9.513507698668732.
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.1) - 9.513_507_698_668_732f64.ln()).abs() < 1e-13);
    }

    #[test]
    fn interval_of_three_values_by_hand() {
        // Mean 7/3, s = √(7/3) = 1.527525, half-width 4.302653 · s / √3 = 3.794583.
        let i = Interval::of(&[1.0, 2.0, 4.0]).unwrap();
        assert!((i.mean - 7.0 / 3.0).abs() < 1e-12);
        assert!((i.std.unwrap() - 1.527_525).abs() < 1e-6);
        assert!((i.half_width.unwrap() - 3.794_583).abs() < 1e-5);
        assert!((i.lo().unwrap() - (7.0 / 3.0 - 3.794_583)).abs() < 1e-5);
        assert_eq!(i.to_string(), "2.33 ± 3.79");
        assert_eq!(format!("{i:.1}"), "2.3 ± 3.8");
    }

    #[test]
    fn one_value_has_no_interval_and_says_so() {
        let i = Interval::of(&[0.5]).unwrap();
        assert_eq!(
            (i.std, i.half_width, i.lo(), i.hi()),
            (None, None, None, None)
        );
        assert_eq!(i.to_string(), "0.500 (n = 1, no interval)");
        // Equal values: a defined interval of zero width, not an undefined one.
        let i = Interval::of(&[2.0, 2.0]).unwrap();
        assert_eq!(i.half_width, Some(0.0));
        assert_eq!(i.to_string(), "2.00 ± 0.00");
    }

    #[test]
    fn small_metrics_keep_their_digits_and_bad_input_is_an_error() {
        let i = Interval::of(&[0.00120, 0.00131, 0.00125, 0.00118]).unwrap();
        assert_eq!(i.to_string(), "0.0012350 ± 0.0000923");
        assert!(Interval::of(&[]).is_err());
        let e = Interval::of(&[1.0, f64::NAN]).unwrap_err().to_string();
        assert!(e.contains("value 1 of 2 is NaN"), "{e}");
    }

    #[test]
    fn markdown_table_of_intervals() {
        let a = Interval::of(&[1.0, 2.0, 4.0]).unwrap();
        let b = Interval::of(&[3.0]).unwrap();
        let t = markdown_table(&["variant", "FD", "KID"], &[("a|b", &[a, b])]).unwrap();
        assert_eq!(
            t,
            "| variant | FD | KID |\n| --- | --- | --- |\n\
             | a\\|b | 2.33 ± 3.79 | 3.00 (n = 1, no interval) |\n"
        );
        let e = markdown_table(&["variant", "FD"], &[("a", &[a, b])]).unwrap_err();
        assert!(e.to_string().contains("row `a` has 2 cells"), "{e}");
    }
}
