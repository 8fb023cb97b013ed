//! From the sweep's runs to the paper's numbers: per budget, the parabola of validation loss in
//! log₁₀ N and its vertex N*(C) (D*(C) = C / 6N*); the power laws N*(C) = A·C^α and D*(C); and
//! the two-step downstream prediction — normalized NLL of the compute-optimal model against
//! compute (a power law), then accuracy from NLL (a sigmoid over every run) — fitted without the
//! largest budgets and checked on them.

use anyhow::{bail, Result};
use serde::Serialize;

use super::fit::{Parabola, PowerLaw, Sigmoid};
use super::sweep::RunResult;

/// The paper's exponent of N*(C) (§3.2.1), for comparison.
pub const PAPER_ALPHA: f64 = 0.53;

/// One budget's IsoFLOP curve.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// FLOPs.
    pub flops: f64,
    /// `loss = a·x² + b·x + c` with x = log₁₀ N.
    pub parabola: [f64; 3],
    /// The compute-optimal N.
    pub optimal_params: f64,
    /// The compute-optimal tokens, C / 6N*.
    pub optimal_tokens: f64,
    /// The loss at the vertex.
    pub optimal_loss: f64,
    /// The downstream NLL at N* (its own parabola in log₁₀ N), when measured.
    pub optimal_nll: Option<f64>,
    /// Accuracy of the run nearest N* (in log N), when measured.
    pub nearest_acc: Option<f64>,
}

/// A fitted power law, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Law {
    /// A.
    pub factor: f64,
    /// α.
    pub exponent: f64,
    /// α's 95% confidence half-width.
    pub exponent_ci95: Option<f64>,
}

impl From<PowerLaw> for Law {
    fn from(p: PowerLaw) -> Law {
        Law {
            factor: p.factor,
            exponent: p.exponent,
            exponent_ci95: p.exponent_ci,
        }
    }
}

/// The two-step prediction of the held-out budgets.
#[derive(Debug, Clone, Serialize)]
pub struct Downstream {
    /// Step one, on the kept budgets: NLL of the compute-optimal model = A·C^α.
    pub nll_law: Law,
    /// Step two, on every run of the kept budgets: accuracy from NLL.
    pub sigmoid: [f64; 3],
    /// Per held-out budget: FLOPs, predicted NLL and accuracy, measured NLL and accuracy.
    pub held_out: Vec<HeldOut>,
}

/// A held-out budget's prediction against its measurement.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    /// FLOPs.
    pub flops: f64,
    /// NLL predicted from compute.
    pub predicted_nll: f64,
    /// Accuracy predicted from that NLL.
    pub predicted_acc: f64,
    /// NLL at the budget's N*.
    pub measured_nll: f64,
    /// Accuracy of the budget's run nearest N*.
    pub measured_acc: f64,
}

/// Everything the sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Per budget, small to large.
    pub budgets: Vec<Budget>,
    /// N*(C) = A·C^α over every budget.
    pub params_law: Law,
    /// D*(C) = B·C^β over every budget.
    pub tokens_law: Law,
    /// The paper's α.
    pub paper_alpha: f64,
    /// Budgets left out of the fits, with why (no minimum inside the sizes tried).
    pub excluded: Vec<String>,
    /// The downstream prediction, when the sweep has a downstream task.
    pub downstream: Option<Downstream>,
}

/// Fits everything to the runs; `held_out` largest budgets are kept out of the downstream fits.
pub fn analyze(runs: &[RunResult], held_out: usize) -> Result<Analysis> {
    let mut flops: Vec<f64> = runs.iter().map(|r| r.budget).collect();
    flops.sort_by(f64::total_cmp);
    flops.dedup();
    let mut budgets = Vec::new();
    let mut excluded = Vec::new();
    for &c in &flops {
        let of_budget: Vec<&RunResult> = runs.iter().filter(|r| r.budget == c).collect();
        if of_budget.len() < 3 {
            bail!(
                "budget {c:.2e} has {} runs; a parabola needs 3 (lower min_steps or add sizes)",
                of_budget.len()
            );
        }
        let points: Vec<(f64, f64)> = of_budget
            .iter()
            .map(|r| (r.params.log10(), r.val_loss))
            .collect();
        let parabola = Parabola::fit(&points)?;
        // The vertex must lie among the sizes tried: outside them the parabola extrapolates.
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let vertex = match parabola.vertex() {
            Ok(v) if v > lo && v < hi => v,
            Ok(v) => {
                excluded.push(format!(
                    "{c:.2e} FLOPs: the loss is lowest at N = {:.2e}, outside the sizes tried \
                     ({:.2e}–{:.2e}); add {} models",
                    10f64.powf(v),
                    10f64.powf(lo),
                    10f64.powf(hi),
                    if v <= lo { "smaller" } else { "larger" }
                ));
                continue;
            }
            Err(e) => {
                excluded.push(format!("{c:.2e} FLOPs: {e}"));
                continue;
            }
        };
        let nll_points: Vec<(f64, f64)> = of_budget
            .iter()
            .filter_map(|r| r.downstream_nll.map(|n| (r.params.log10(), n)))
            .collect();
        let optimal_nll = if nll_points.len() >= 3 {
            Some(Parabola::fit(&nll_points)?.at(vertex))
        } else {
            None
        };
        let nearest = of_budget
            .iter()
            .min_by(|a, b| {
                (a.params.log10() - vertex)
                    .abs()
                    .total_cmp(&(b.params.log10() - vertex).abs())
            })
            .expect("3 runs");
        let optimal_params = 10f64.powf(vertex);
        budgets.push(Budget {
            flops: c,
            parabola: [parabola.a, parabola.b, parabola.c],
            optimal_params,
            optimal_tokens: c / (6.0 * optimal_params),
            optimal_loss: parabola.at(vertex),
            optimal_nll,
            nearest_acc: nearest.downstream_acc,
        });
    }
    if budgets.len() < 2 {
        bail!(
            "fewer than 2 budgets have a compute-optimal size among the sizes tried:\n  {}",
            excluded.join("\n  ")
        );
    }
    let params_law = PowerLaw::fit(
        &budgets
            .iter()
            .map(|b| (b.flops, b.optimal_params))
            .collect::<Vec<_>>(),
    )?;
    let tokens_law = PowerLaw::fit(
        &budgets
            .iter()
            .map(|b| (b.flops, b.optimal_tokens))
            .collect::<Vec<_>>(),
    )?;
    let downstream =
        if budgets.iter().all(|b| b.optimal_nll.is_some()) && budgets.len() >= held_out + 2 {
            Some(downstream(runs, &budgets, held_out)?)
        } else {
            None
        };
    Ok(Analysis {
        budgets,
        params_law: params_law.into(),
        tokens_law: tokens_law.into(),
        paper_alpha: PAPER_ALPHA,
        excluded,
        downstream,
    })
}

fn downstream(runs: &[RunResult], budgets: &[Budget], held_out: usize) -> Result<Downstream> {
    let kept = &budgets[..budgets.len() - held_out];
    let cutoff = kept.last().expect("2 budgets kept").flops;
    let nll_law = PowerLaw::fit(
        &kept
            .iter()
            .map(|b| (b.flops, b.optimal_nll.expect("checked")))
            .collect::<Vec<_>>(),
    )?;
    let fitted: Vec<&RunResult> = runs.iter().filter(|r| r.budget <= cutoff).collect();
    let points: Vec<(f64, f64)> = fitted
        .iter()
        .filter_map(|r| Some((r.downstream_nll?, r.downstream_acc?)))
        .collect();
    let chance = fitted
        .iter()
        .filter_map(|r| r.downstream_chance)
        .sum::<f64>()
        / fitted.len().max(1) as f64;
    let sigmoid = Sigmoid::fit(&points, chance)?;
    let held_out = budgets[budgets.len() - held_out..]
        .iter()
        .map(|b| {
            let predicted_nll = nll_law.at(b.flops);
            HeldOut {
                flops: b.flops,
                predicted_nll,
                predicted_acc: sigmoid.at(predicted_nll),
                measured_nll: b.optimal_nll.expect("checked"),
                measured_acc: b.nearest_acc.unwrap_or(f64::NAN),
            }
        })
        .collect();
    Ok(Downstream {
        nll_law: nll_law.into(),
        sigmoid: [sigmoid.floor, sigmoid.slope, sigmoid.midpoint],
        held_out,
    })
}

/// The findings as a markdown table (α next to the paper's, the held-out check).
pub fn markdown(a: &Analysis) -> String {
    let mut s = String::from(
        "| budget (FLOPs) | N* (params) | D* (tokens) | loss at N* | downstream NLL at N* |\n\
         |---:|---:|---:|---:|---:|\n",
    );
    for b in &a.budgets {
        s += &format!(
            "| {:.2e} | {:.3e} | {:.3e} | {:.4} | {} |\n",
            b.flops,
            b.optimal_params,
            b.optimal_tokens,
            b.optimal_loss,
            b.optimal_nll.map_or("—".into(), |n| format!("{n:.4}"))
        );
    }
    let ci = |l: &Law| {
        l.exponent_ci95
            .map_or("n/a".into(), |c| format!("± {c:.3}"))
    };
    s += &format!(
        "\n| fit | herd | paper |\n|---|---:|---:|\n\
         | α of N*(C) = A·C^α | {:.3} {} | {PAPER_ALPHA} |\n| A | {:.3e} | 0.29 |\n\
         | β of D*(C) = B·C^β | {:.3} {} | — |\n",
        a.params_law.exponent,
        ci(&a.params_law),
        a.params_law.factor,
        a.tokens_law.exponent,
        ci(&a.tokens_law),
    );
    for e in &a.excluded {
        s += &format!("\nLeft out of the fits: {e}\n");
    }
    if let Some(d) = &a.downstream {
        s +=
            "\n| held-out budget | predicted NLL | measured NLL | predicted acc | measured acc |\n\
              |---:|---:|---:|---:|---:|\n";
        for h in &d.held_out {
            s += &format!(
                "| {:.2e} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                h.flops, h.predicted_nll, h.measured_nll, h.predicted_acc, h.measured_acc
            );
        }
    }
    s
}
