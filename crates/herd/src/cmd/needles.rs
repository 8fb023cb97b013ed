//! `herd needles`: needle in a haystack over context lengths × depths (paper §5.2), as a JSON
//! table and a PNG heatmap.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use herd_eval::needles::{run as run_grid, NeedleCell, NeedleConfig};
use herd_eval::EvalModel;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde_json::json;

use super::ModelArgs;

/// Flags of `herd needles`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:
  herd needles -m model.gguf --haystack book.txt --lengths 1024,2048,4096,8192 \\
      --depths 0,25,50,75,100 --out needles/
  herd needles -m model.gguf --haystack book.txt --needles 4 --asked 2 --out multi/

Each cell hides seven-digit \"special magic numbers\" in the text, asks for them at the end and
scores the share found in the greedy answer. Writes needles.json and needles.png into --out.")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Text the needles are hidden in (UTF-8, possibly .gz or .zst); repeated when shorter
    /// than a context.
    #[arg(long, required = true)]
    haystack: Vec<PathBuf>,
    /// Context lengths in tokens, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096")]
    lengths: Vec<usize>,
    /// Depths in percent where the (first) needle goes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,25,50,75,100")]
    depths: Vec<f64>,
    /// Needles hidden per prompt (the paper's multi-needle test: 4).
    #[arg(long, default_value_t = 1)]
    needles: usize,
    /// Needles asked for per prompt (the paper's multi-needle test: 2).
    #[arg(long, default_value_t = 1)]
    asked: usize,
    /// Seed of the hidden numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for needles.json and needles.png.
    #[arg(long, short)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `herd needles`.
pub fn run(args: Args) -> Result<()> {
    if let Some(d) = args.depths.iter().find(|d| !(0.0..=100.0).contains(*d)) {
        bail!("--depths {d}: a depth is a percentage, 0 to 100");
    }
    if args.lengths.is_empty() || args.depths.is_empty() {
        bail!("--lengths and --depths need at least one value each");
    }
    if args.lengths.contains(&0) {
        bail!("--lengths: a context length is a positive number of tokens");
    }
    let mut haystack = String::new();
    for path in &args.haystack {
        haystack.push_str(&super::read_text_file(path)?);
        haystack.push('\n');
    }
    let config = NeedleConfig {
        lengths: args.lengths.clone(),
        depths: args.depths.clone(),
        needles: args.needles,
        asked: args.asked,
        seed: args.seed,
    };
    let loaded = args.model.load()?;
    let lm = EvalModel::new(std::sync::Arc::new(loaded.model), &loaded.tokenizer);
    let total = (args.lengths.len() * args.depths.len()) as u64;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("needles [{bar:30}] {pos}/{len} cells  {per_sec}  ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let cells = run_grid(&lm, &haystack, &config, |_cell| bar.inc(1))?;
    bar.finish();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mean = cells.iter().map(|c| c.score).sum::<f64>() / cells.len().max(1) as f64;
    let table = json!({
        "model": args.model.model.display().to_string(),
        "config": config,
        "mean_score": mean,
        "cells": cells,
    });
    let json_path = args.out.join("needles.json");
    herd_util::fs::write_atomic(&json_path, serde_json::to_string_pretty(&table)?.as_bytes())?;
    let png = args.out.join("needles.png");
    heatmap(&cells, &config, &png).with_context(|| format!("drawing {}", png.display()))?;
    for length in &config.lengths {
        let row: Vec<String> = cells
            .iter()
            .filter(|c| c.length == *length)
            .map(|c| format!("{:.2}", c.score))
            .collect();
        println!("{length:>7} tokens: {}", row.join(" "));
    }
    println!(
        "mean {mean:.3}; wrote {} and {}",
        json_path.display(),
        png.display()
    );
    Ok(())
}

/// Depth (rows, top 0%) × context length (columns), each cell coloured from red (nothing
/// found) to green (all found), with its score.
fn heatmap(cells: &[NeedleCell], config: &NeedleConfig, out: &Path) -> Result<()> {
    super::plot::register_font()?;
    let (cols, rows) = (config.lengths.len(), config.depths.len());
    let root = BitMapBackend::new(out, (160 + 110 * cols as u32, 140 + 60 * rows as u32))
        .into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "Needle in a haystack: {} of {} needles asked",
        config.asked, config.needles
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        // plotters' integer ranges include their end: cells 0..=cols-1.
        .build_cartesian_2d(
            (0..cols - 1).into_segmented(),
            (0..rows - 1).into_segmented(),
        )?;
    let index = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => Some(*i),
        SegmentValue::Last => None,
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols)
        .y_labels(rows)
        .x_desc("context length (tokens)")
        .y_desc("needle depth (%)")
        .x_label_formatter(&|x| {
            index(x)
                .and_then(|i| config.lengths.get(i))
                .map_or(String::new(), |l| l.to_string())
        })
        .y_label_formatter(&|y| {
            index(y)
                .and_then(|i| config.depths.get(rows.checked_sub(1 + i)?))
                .map_or(String::new(), |d| format!("{d}"))
        })
        .draw()?;
    for cell in cells {
        let x = config
            .lengths
            .iter()
            .position(|&l| l == cell.length)
            .unwrap_or(0);
        let y = rows
            - 1
            - config
                .depths
                .iter()
                .position(|&d| d == cell.depth)
                .unwrap_or(0);
        let s = cell.score.clamp(0.0, 1.0);
        let colour = RGBColor((220.0 * (1.0 - s)) as u8 + 20, (180.0 * s) as u8 + 40, 60);
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
            ],
            colour.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{s:.2}"),
            (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
            ("sans-serif", 16).into_font().color(&WHITE),
        )))?;
    }
    root.present()?;
    Ok(())
}
