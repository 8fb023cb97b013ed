//! The fits of the paper's scaling-law study (§3.2.1): a parabola through each compute budget's
//! losses against log model size (its vertex is the compute-optimal size), a power law through
//! the optima, `N*(C) = A·C^α`, with a confidence interval on α, and the sigmoid that maps a
//! downstream task's normalized negative log-likelihood to its accuracy.
//!
//! The fits are small least-squares problems (three parameters at most), solved here in closed
//! form or by a damped Gauss–Newton iteration; a linear-algebra crate would bring more than the
//! 3×3 solve they need.

use anyhow::{bail, Result};

/// `y = a·x² + b·x + c`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parabola {
    /// Curvature (positive for a minimum).
    pub a: f64,
    /// Slope at 0.
    pub b: f64,
    /// Value at 0.
    pub c: f64,
}

impl Parabola {
    /// The least-squares parabola through `(x, y)` points (three at least, two distinct x).
    pub fn fit(points: &[(f64, f64)]) -> Result<Parabola> {
        if points.len() < 3 {
            bail!("a parabola needs 3 points or more, {} given", points.len());
        }
        // Normal equations in x centred on the mean, for conditioning.
        let mean = points.iter().map(|p| p.0).sum::<f64>() / points.len() as f64;
        let mut m = [[0.0; 4]; 3];
        for &(x, y) in points {
            let u = x - mean;
            let row = [u * u, u, 1.0];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] += row[i] * row[j];
                }
                m[i][3] += row[i] * y;
            }
        }
        let [a, b, c] = solve3(m)?;
        // Back from u = x − mean.
        Ok(Parabola {
            a,
            b: b - 2.0 * a * mean,
            c: a * mean * mean - b * mean + c,
        })
    }

    /// The value at `x`.
    pub fn at(&self, x: f64) -> f64 {
        (self.a * x + self.b) * x + self.c
    }

    /// Where the parabola is lowest; an error when it opens downwards (no minimum).
    pub fn vertex(&self) -> Result<f64> {
        if self.a <= 0.0 {
            bail!(
                "the losses have no minimum across these model sizes (the parabola opens \
                 downwards): add larger and smaller models"
            );
        }
        Ok(-self.b / (2.0 * self.a))
    }
}

/// Gaussian elimination with partial pivoting on an augmented 3×4 matrix.
fn solve3(mut m: [[f64; 4]; 3]) -> Result<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .expect("rows");
        if m[pivot][col].abs() < 1e-300 {
            bail!("the points do not determine the fit (too few distinct x values)");
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for row in m.iter_mut().skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (v, p) in row.iter_mut().zip(pivot_row).skip(col) {
                *v -= f * p;
            }
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let tail: f64 = (row + 1..3).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][3] - tail) / m[row][row];
    }
    Ok(x)
}

/// `y = A·x^α`, fitted as a line in log-log space, with the 95% confidence interval of α.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    /// The factor A.
    pub factor: f64,
    /// The exponent α.
    pub exponent: f64,
    /// Half-width of α's 95% confidence interval (Student's t on n − 2 degrees of freedom);
    /// `None` with two points, which leave no residual to estimate it from.
    pub exponent_ci: Option<f64>,
}

impl PowerLaw {
    /// The least-squares line `log y = log A + α log x` through positive points.
    pub fn fit(points: &[(f64, f64)]) -> Result<PowerLaw> {
        if points.len() < 2 {
            bail!("a power law needs 2 points or more, {} given", points.len());
        }
        if points.iter().any(|&(x, y)| !(x > 0.0 && y > 0.0)) {
            bail!("a power law is fitted to positive values only");
        }
        let logs: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x.ln(), y.ln())).collect();
        let n = logs.len() as f64;
        let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
        let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx <= 0.0 {
            bail!("a power law needs two different x values");
        }
        let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let exponent = sxy / sxx;
        let intercept = my - exponent * mx;
        let exponent_ci = (logs.len() > 2).then(|| {
            let rss: f64 = logs
                .iter()
                .map(|p| (p.1 - intercept - exponent * p.0).powi(2))
                .sum();
            let se = (rss / (n - 2.0) / sxx).sqrt();
            student_t_975(logs.len() - 2) * se
        });
        Ok(PowerLaw {
            factor: intercept.exp(),
            exponent,
            exponent_ci,
        })
    }

    /// The value at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.factor * x.powf(self.exponent)
    }
}

/// The 97.5% quantile of Student's t with `dof` degrees of freedom (two-sided 95%).
fn student_t_975(dof: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match dof {
        0 => f64::INFINITY,
        d if d <= 30 => TABLE[d - 1],
        _ => 1.960,
    }
}

/// Accuracy from normalized negative log-likelihood, as the paper's second step:
/// `acc = floor + (1 − floor) · σ(−slope · (nll − midpoint))`, where `floor` is chance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sigmoid {
    /// Chance accuracy (the mean of 1 / choices).
    pub floor: f64,
    /// How fast accuracy rises as the NLL falls.
    pub slope: f64,
    /// The NLL at which accuracy is halfway between chance and 1.
    pub midpoint: f64,
}

impl Sigmoid {
    /// The accuracy predicted at `nll`.
    pub fn at(&self, nll: f64) -> f64 {
        self.floor + (1.0 - self.floor) / (1.0 + (self.slope * (nll - self.midpoint)).exp())
    }

    /// The least-squares sigmoid through `(nll, accuracy)` points with the given chance floor,
    /// by Levenberg–Marquardt from a start read off the points.
    pub fn fit(points: &[(f64, f64)], floor: f64) -> Result<Sigmoid> {
        if points.len() < 2 {
            bail!("a sigmoid needs 2 points or more, {} given", points.len());
        }
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let spread = (hi - lo).max(1e-3);
        let residual =
            |s: &Sigmoid| -> f64 { points.iter().map(|p| (s.at(p.0) - p.1).powi(2)).sum() };
        // Start from the best of a coarse grid, then refine.
        let mut best = Sigmoid {
            floor,
            slope: 1.0,
            midpoint: lo,
        };
        let mut best_rss = residual(&best);
        for i in 0..=20 {
            for j in 0..=12 {
                let s = Sigmoid {
                    floor,
                    slope: 0.5 * 2f64.powi(j) / spread,
                    midpoint: lo - spread + 3.0 * spread * i as f64 / 20.0,
                };
                let rss = residual(&s);
                if rss < best_rss {
                    (best, best_rss) = (s, rss);
                }
            }
        }
        let mut damping = 1e-3;
        for _ in 0..200 {
            // Jacobian of the residuals in (slope, midpoint).
            let (mut jtj, mut jtr) = ([[0.0; 2]; 2], [0.0; 2]);
            for &(x, y) in points {
                let e = (best.slope * (x - best.midpoint)).exp();
                let g = (1.0 - floor) / (1.0 + e);
                let dg = -g * e / (1.0 + e); // d g / d(slope·(x − midpoint))
                let jac = [dg * (x - best.midpoint), -dg * best.slope];
                let r = floor + g - y;
                for a in 0..2 {
                    jtr[a] += jac[a] * r;
                    for b in 0..2 {
                        jtj[a][b] += jac[a] * jac[b];
                    }
                }
            }
            let a00 = jtj[0][0] * (1.0 + damping);
            let a11 = jtj[1][1] * (1.0 + damping);
            let det = a00 * a11 - jtj[0][1] * jtj[1][0];
            if det.abs() < 1e-300 {
                break;
            }
            let step = [
                -(a11 * jtr[0] - jtj[0][1] * jtr[1]) / det,
                -(a00 * jtr[1] - jtj[1][0] * jtr[0]) / det,
            ];
            let next = Sigmoid {
                floor,
                slope: best.slope + step[0],
                midpoint: best.midpoint + step[1],
            };
            let next_rss = residual(&next);
            if next_rss < best_rss {
                let gain = best_rss - next_rss;
                (best, best_rss) = (next, next_rss);
                damping = (damping / 3.0).max(1e-12);
                if gain < 1e-15 {
                    break;
                }
            } else {
                damping *= 4.0;
                if damping > 1e12 {
                    break;
                }
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use herd_train::params::normal_values;

    #[test]
    fn a_parabola_is_recovered_exactly() {
        let truth = Parabola {
            a: 0.7,
            b: -9.1,
            c: 31.0,
        };
        let points: Vec<(f64, f64)> = (0..6)
            .map(|i| 5.0 + 0.5 * i as f64)
            .map(|x| (x, truth.at(x)))
            .collect();
        let fit = Parabola::fit(&points).unwrap();
        assert!((fit.a - truth.a).abs() < 1e-9 && (fit.b - truth.b).abs() < 1e-8);
        assert!((fit.vertex().unwrap() - 9.1 / 1.4).abs() < 1e-9);
        let down = Parabola::fit(&[(0.0, 0.0), (1.0, 1.0), (2.0, 0.0)]).unwrap();
        assert!(down.vertex().is_err());
    }

    #[test]
    fn isoflop_minima_recover_the_known_exponent() {
        // Chinchilla's loss form L = E + A/N^a + B/D^b with D = C/(6N) has its IsoFLOP minimum
        // at N* = G·(C/6)^(b/(a+b)), G = (aA/(bB))^(1/(a+b)): α = b/(a+b) = 0.53 here, the
        // paper's. Each budget's losses carry noise; the parabolas' vertices and the power law
        // through them must give α back within the fit's own confidence interval.
        let (e, a_, b_, alpha_n, beta_d): (f64, f64, f64, f64, f64) =
            (1.7, 400.0, 1100.0, 0.32, 0.36);
        let alpha = beta_d / (alpha_n + beta_d);
        let g = (alpha_n * a_ / (beta_d * b_)).powf(1.0 / (alpha_n + beta_d));
        let mut noise = normal_values(42, 45, 0.002).into_iter();
        let mut optima = Vec::new();
        for budget in [1e15, 4e15, 1.6e16, 6.4e16, 2.56e17] {
            let n_star = g * (budget / 6.0f64).powf(alpha);
            let points: Vec<(f64, f64)> = (-4..=4)
                .map(|i| n_star * 10f64.powf(i as f64 * 0.15))
                .map(|n| {
                    let d = budget / (6.0 * n);
                    let loss = e + a_ / n.powf(alpha_n) + b_ / d.powf(beta_d);
                    (n.log10(), loss + noise.next().expect("one draw per point"))
                })
                .collect();
            let vertex = Parabola::fit(&points).unwrap().vertex().unwrap();
            optima.push((budget, 10f64.powf(vertex)));
        }
        let law = PowerLaw::fit(&optima).unwrap();
        let ci = law.exponent_ci.unwrap();
        assert!(ci < 0.05, "{law:?}");
        assert!(
            (law.exponent - alpha).abs() < ci.max(0.01),
            "{law:?} vs α {alpha}"
        );
        let a_true = g * 6f64.powf(-alpha);
        assert!(
            (law.factor / a_true).ln().abs() < 0.5,
            "{law:?} vs A {a_true}"
        );
    }

    #[test]
    fn a_noiseless_power_law_is_exact() {
        let points: Vec<(f64, f64)> = [1e18, 1e19, 1e20, 1e21]
            .iter()
            .map(|&c: &f64| (c, 0.29 * c.powf(0.53)))
            .collect();
        let law = PowerLaw::fit(&points).unwrap();
        assert!((law.exponent - 0.53).abs() < 1e-12);
        assert!((law.factor / 0.29 - 1.0).abs() < 1e-9);
        assert!(law.exponent_ci.unwrap() < 1e-9);
    }

    #[test]
    fn the_sigmoid_is_recovered_from_noisy_accuracies() {
        let truth = Sigmoid {
            floor: 0.25,
            slope: 6.0,
            midpoint: 1.1,
        };
        let noise = normal_values(7, 25, 0.01);
        let points: Vec<(f64, f64)> = (0..25)
            .map(|i| 0.6 + 0.05 * i as f64)
            .zip(noise)
            .map(|(nll, e)| (nll, truth.at(nll) + e))
            .collect();
        let fit = Sigmoid::fit(&points, 0.25).unwrap();
        assert!((fit.slope - truth.slope).abs() < 0.6, "{fit:?}");
        assert!((fit.midpoint - truth.midpoint).abs() < 0.03, "{fit:?}");
    }
}
