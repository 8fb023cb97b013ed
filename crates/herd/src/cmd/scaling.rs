//! `herd scaling`: the paper's scaling-law study (§3.2.1) — an IsoFLOP sweep of pretraining runs,
//! the compute-optimal model size and its power law, and the two-step prediction of downstream
//! accuracy — with PNGs like the paper's figures 2–4.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use herd_eval::scaling::analysis::{analyze, markdown, Analysis};
use herd_eval::scaling::sweep::{run_sweep, RunResult, SweepRecipe};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot::register_font;

/// Flags of `herd scaling`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:
  herd scaling --recipe recipes/scaling-books.toml --out runs/scaling-books

Each budget × size is a `herd pretrain` run in OUT/runs/<budget>-<size>; a finished run is read
back and an interrupted one resumes, so running the command again continues the sweep. OUT gets
scaling.json (every run and fit), scaling.md (the tables), isoflops.png (paper fig. 2),
optimal_size.png (fig. 3) and downstream.png (fig. 4).")]
pub struct Args {
    /// The sweep recipe (recipes/scaling-*.toml).
    #[arg(long, short)]
    recipe: PathBuf,
    /// Output folder [default: runs/<sweep name>].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// Runs `herd scaling`.
pub fn run(args: Args) -> Result<()> {
    let sweep = SweepRecipe::load(&args.recipe)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(&sweep.name));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let (runs, skipped) = run_sweep(&sweep, &out, !args.quiet, &mut |i, total, plan| {
        eprintln!(
            "[{}/{total}] {}: N {:.2e}, {:.2e} tokens, {} steps",
            i + 1,
            plan.name,
            plan.params,
            plan.tokens,
            plan.steps
        );
    })?;
    for s in &skipped {
        eprintln!("left out: {s}");
    }
    let analysis = analyze(&runs, sweep.held_out_budgets)?;
    let json = serde_json::json!({
        "sweep": sweep.name,
        "runs": runs,
        "left_out": skipped,
        "analysis": analysis,
    });
    herd_util::fs::write_atomic(
        &out.join("scaling.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let table = markdown(&analysis);
    herd_util::fs::write_atomic(&out.join("scaling.md"), table.as_bytes())?;
    register_font()?;
    draw_isoflops(&runs, &analysis, &out.join("isoflops.png"))?;
    draw_optimal_size(&analysis, &out.join("optimal_size.png"))?;
    if analysis.downstream.is_some() {
        draw_downstream(&runs, &analysis, &out.join("downstream.png"))?;
    }
    print!("{table}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Distinct colours for budgets, small to large.
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    PALETTE[i % PALETTE.len()]
}

/// The range of values with a margin.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// A chart of the figures' common look on `area`: a caption, and x and y axes with their
/// ranges and labels.
fn axes<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
    (x, x_desc): (Range<f64>, &str),
    (y, y_desc): (Range<f64>, &str),
) -> Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

/// A chart with linear f64 axes on a PNG.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Fig. 2: validation loss against log₁₀ N per budget, with its parabola and vertex.
fn draw_isoflops(runs: &[RunResult], a: &Analysis, out: &Path) -> Result<()> {
    let root = BitMapBackend::new(out, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = span(runs.iter().map(|r| r.params.log10()));
    let (y0, y1) = span(runs.iter().map(|r| r.val_loss));
    let mut chart = axes(
        &root,
        "IsoFLOP curves",
        (x0..x1, "log10 parameters"),
        (y0..y1, "validation loss"),
    )?;
    for (i, b) in a.budgets.iter().enumerate() {
        let c = colour(i);
        let [pa, pb, pc] = b.parabola;
        let curve = (0..=100).map(|k| {
            let x = x0 + (x1 - x0) * k as f64 / 100.0;
            (x, (pa * x + pb) * x + pc)
        });
        chart
            .draw_series(LineSeries::new(
                curve.filter(|p| p.1 >= y0 && p.1 <= y1),
                c.stroke_width(2),
            ))?
            .label(format!("{:.1e} FLOPs", b.flops))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        chart.draw_series(
            runs.iter()
                .filter(|r| r.budget == b.flops)
                .map(|r| Circle::new((r.params.log10(), r.val_loss), 4, c.filled())),
        )?;
        chart.draw_series(std::iter::once(TriangleMarker::new(
            (b.optimal_params.log10(), b.optimal_loss),
            7,
            BLACK.filled(),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Fig. 3: the compute-optimal N* against compute, log-log, with the power law.
fn draw_optimal_size(a: &Analysis, out: &Path) -> Result<()> {
    let root = BitMapBackend::new(out, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = span(a.budgets.iter().map(|b| b.flops.log10()));
    let (y0, y1) = span(a.budgets.iter().map(|b| b.optimal_params.log10()));
    let law = &a.params_law;
    let caption = format!(
        "N*(C) = {:.2e} C^{:.3}{}  (paper: 0.29 C^0.53)",
        law.factor,
        law.exponent,
        law.exponent_ci95
            .map_or(String::new(), |c| format!(" +/- {c:.3}"))
    );
    let mut chart = axes(
        &root,
        &caption,
        (x0..x1, "log10 compute (FLOPs)"),
        (y0..y1, "log10 compute-optimal parameters"),
    )?;
    chart.draw_series(LineSeries::new(
        [x0, x1].map(|x| (x, law.factor.log10() + law.exponent * x)),
        BLACK.stroke_width(2),
    ))?;
    chart.draw_series(a.budgets.iter().enumerate().map(|(i, b)| {
        Circle::new(
            (b.flops.log10(), b.optimal_params.log10()),
            6,
            colour(i).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Fig. 4: left, the compute-optimal model's downstream NLL against compute with its power law
/// (held-out budgets hollow); right, accuracy against NLL for every run with the sigmoid.
fn draw_downstream(runs: &[RunResult], a: &Analysis, out: &Path) -> Result<()> {
    let d = a.downstream.as_ref().expect("checked by the caller");
    let root = BitMapBackend::new(out, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let (x0, x1) = span(a.budgets.iter().map(|b| b.flops.log10()));
    let nlls = a.budgets.iter().filter_map(|b| b.optimal_nll);
    let predicted = d.held_out.iter().map(|h| h.predicted_nll);
    let (y0, y1) = span(nlls.chain(predicted));
    let mut chart = axes(
        &left,
        "NLL of the right answer vs compute",
        (x0..x1, "log10 compute (FLOPs)"),
        (y0..y1, "normalized NLL (nats/char)"),
    )?;
    let law = &d.nll_law;
    chart.draw_series(LineSeries::new(
        (0..=50).map(|k| {
            let x = x0 + (x1 - x0) * k as f64 / 50.0;
            (x, law.factor * 10f64.powf(x * law.exponent))
        }),
        BLACK.stroke_width(2),
    ))?;
    let held: Vec<f64> = d.held_out.iter().map(|h| h.flops).collect();
    for b in &a.budgets {
        let point = (b.flops.log10(), b.optimal_nll.expect("checked"));
        if held.contains(&b.flops) {
            chart.draw_series(std::iter::once(Circle::new(point, 6, RED.stroke_width(2))))?;
        } else {
            chart.draw_series(std::iter::once(Circle::new(point, 6, BLUE.filled())))?;
        }
    }
    let points: Vec<(f64, f64)> = runs
        .iter()
        .filter_map(|r| Some((r.downstream_nll?, r.downstream_acc?)))
        .collect();
    let (u0, u1) = span(points.iter().map(|p| p.0));
    let (v0, v1) = span(points.iter().map(|p| p.1).chain([d.sigmoid[0]]));
    let mut chart = axes(
        &right,
        "accuracy vs NLL",
        (u0..u1, "normalized NLL (nats/char)"),
        (v0..v1, "accuracy"),
    )?;
    let [floor, slope, midpoint] = d.sigmoid;
    chart.draw_series(LineSeries::new(
        (0..=100).map(|k| {
            let x = u0 + (u1 - u0) * k as f64 / 100.0;
            (
                x,
                floor + (1.0 - floor) / (1.0 + (slope * (x - midpoint)).exp()),
            )
        }),
        BLACK.stroke_width(2),
    ))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    chart.draw_series(
        d.held_out
            .iter()
            .map(|h| TriangleMarker::new((h.predicted_nll, h.predicted_acc), 7, RED.filled())),
    )?;
    root.present()?;
    Ok(())
}
