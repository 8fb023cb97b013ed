//! `herd plot`: training curves of a run as a PNG — training and validation loss, and the
//! learning rate, against the step. Labels are drawn with a bundled ASCII cut of DejaVu Sans
//! (`assets/`), so no system fonts are needed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use herd_train::metrics::{read, StepMetrics};
use plotters::prelude::*;

/// DejaVu Sans cut to printable ASCII by `tools/fonts/subset_font.sh` (license beside it).
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-ascii.ttf");

/// Flags of `herd plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder (with metrics.jsonl) or a metrics.jsonl file.
    run: PathBuf,
    /// The PNG to write [default: curves.png beside metrics.jsonl].
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// Runs `herd plot`.
pub fn run(args: Args) -> Result<()> {
    let metrics_path = if args.run.is_dir() {
        args.run.join("metrics.jsonl")
    } else {
        args.run.clone()
    };
    let metrics = read(&metrics_path)?;
    if metrics.is_empty() {
        bail!("{}: no metrics to plot", metrics_path.display());
    }
    let out = args
        .out
        .unwrap_or_else(|| metrics_path.with_file_name("curves.png"));
    draw(&metrics, &out).with_context(|| format!("drawing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Makes the bundled font plotters' `sans-serif`.
pub fn register_font() -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the bundled font is not a valid TrueType font"))
}

fn draw(metrics: &[StepMetrics], out: &std::path::Path) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(out, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(520);
    let last = metrics.last().map_or(1, |m| m.step).max(1);
    let train: Vec<(u64, f64)> = metrics
        .iter()
        .filter(|m| !m.skipped && m.loss.is_finite())
        .map(|m| (m.step, m.loss))
        .collect();
    let val: Vec<(u64, f64)> = metrics
        .iter()
        .filter_map(|m| m.val_loss.map(|v| (m.step, v)))
        .collect();
    let losses = train.iter().chain(&val).map(|p| p.1);
    let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(&top)
        .caption("loss (nats per token)", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0..last, (lo - pad)..(hi + pad))?;
    chart.configure_mesh().x_desc("step").draw()?;
    chart
        .draw_series(LineSeries::new(train, BLUE.mix(0.6)))?
        .label("training")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))?
        .label("validation")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    let peak = metrics.iter().map(|m| m.lr).fold(0.0, f64::max).max(1e-12);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("learning rate", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0..last, 0.0..peak * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()?;
    chart.draw_series(LineSeries::new(
        metrics.iter().map(|m| (m.step, m.lr)),
        GREEN.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_are_drawn_to_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let metrics: Vec<StepMetrics> = (1..=50)
            .map(|step| StepMetrics {
                step,
                loss: 9.0 - (step as f64).ln(),
                lr: 1e-3 * (step as f64 / 50.0),
                val_loss: (step % 10 == 0).then_some(8.5 - (step as f64).ln()),
                ..StepMetrics::default()
            })
            .collect();
        let out = dir.path().join("curves.png");
        draw(&metrics, &out).unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 10_000, "a picture with lines and labels");
    }
}
