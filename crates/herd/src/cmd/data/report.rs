//! `herd data report`: what a curation run did — per stage and reason, the documents removed
//! (over all tasks), and of the documents kept the length, language and quality-score
//! distributions — as a table on stderr and a PNG of four panels.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use herd_data::pipeline::Summary;
use plotters::prelude::*;

/// Flags of `herd data report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The output folder of `herd data run` (with counts/ and docs/).
    run: PathBuf,
    /// The PNG to write [default: report.png in the run folder].
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// What the kept documents look like.
#[derive(Default)]
struct Kept {
    lengths: Vec<usize>,
    languages: BTreeMap<String, u64>,
    quality: Vec<f64>,
}

fn files_with(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: not a curation run folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    Ok(files)
}

fn read_kept(docs: &Path) -> Result<Kept> {
    let mut kept = Kept::default();
    for file in files_with(docs, ".jsonl.gz")? {
        let reader = BufReader::new(flate2::read::MultiGzDecoder::new(std::fs::File::open(
            &file,
        )?));
        for line in reader.lines() {
            let record: serde_json::Value = serde_json::from_str(&line?)
                .with_context(|| format!("{}: not JSONL", file.display()))?;
            kept.lengths
                .push(record["text"].as_str().map_or(0, |t| t.chars().count()));
            if let Some(lang) = record["lang"].as_str() {
                *kept.languages.entry(lang.to_string()).or_default() += 1;
            }
            if let Some(q) = record["quality"].as_f64() {
                kept.quality.push(q);
            }
        }
    }
    Ok(kept)
}

/// Runs `herd data report`.
pub fn run(args: Args) -> Result<()> {
    let summaries: Vec<Summary> = files_with(&args.run.join("counts"), ".json")?
        .iter()
        .map(|f| Ok(serde_json::from_str(&std::fs::read_to_string(f)?)?))
        .collect::<Result<_>>()?;
    if summaries.is_empty() {
        bail!(
            "{}: no counts/ — has `herd data run` finished a task?",
            args.run.display()
        );
    }
    let mut removed: Vec<(String, u64, u64)> = Vec::new();
    let (mut docs_in, mut docs_out) = (0, 0);
    for s in &summaries {
        docs_in += s.phases.first().map_or(0, |p| p.1.docs_in);
        docs_out += s.phases.last().map_or(0, |p| p.1.docs_out);
        for (_, counts) in &s.phases {
            for (reason, n) in &counts.removed {
                match removed.iter_mut().find(|r| &r.0 == reason) {
                    Some(r) => (r.1, r.2) = (r.1 + n, r.2 + counts.docs_in),
                    None => removed.push((reason.clone(), *n, counts.docs_in)),
                }
            }
        }
    }
    eprintln!(
        "{} tasks: {docs_in} documents in, {docs_out} kept",
        summaries.len()
    );
    eprintln!("{:<32} {:>10} {:>8}", "removed by", "documents", "share");
    for (reason, n, of) in &removed {
        eprintln!(
            "{reason:<32} {n:>10} {:>7.2}%",
            100.0 * *n as f64 / (*of).max(1) as f64
        );
    }
    let kept = read_kept(&args.run.join("docs"))?;
    let mut sorted = kept.lengths.clone();
    sorted.sort_unstable();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "kept length (characters): median {}, 10% {}, 90% {}",
        pct(0.5),
        pct(0.1),
        pct(0.9)
    );
    let mut languages: Vec<(String, u64)> = kept.languages.clone().into_iter().collect();
    languages.sort_by_key(|l| std::cmp::Reverse(l.1));
    languages.truncate(10);
    if !languages.is_empty() {
        let list: Vec<String> = languages.iter().map(|(l, n)| format!("{l} {n}")).collect();
        eprintln!("languages: {}", list.join(", "));
    }
    let out = args.out.unwrap_or_else(|| args.run.join("report.png"));
    draw(&removed, &kept, &languages, &out)
        .with_context(|| format!("drawing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// One bar chart panel.
fn bars(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    bars: &[(String, f64)],
    color: RGBColor,
) -> Result<()> {
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(70)
        .y_label_area_size(50)
        .build_cartesian_2d(0..bars.len().max(1), 0.0..top * 1.1)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len().max(1))
        .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
        .x_label_style(
            ("sans-serif", 11)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let mut r = Rectangle::new([(i, 0.0), (i + 1, b.1)], color.filled());
        r.set_margin(0, 0, 2, 2);
        r
    }))?;
    Ok(())
}

fn draw(
    removed: &[(String, u64, u64)],
    kept: &Kept,
    languages: &[(String, u64)],
    out: &Path,
) -> Result<()> {
    crate::cmd::plot::register_font()?;
    let root = BitMapBackend::new(out, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    let removals: Vec<(String, f64)> = removed.iter().map(|r| (r.0.clone(), r.1 as f64)).collect();
    bars(&panels[0], "documents removed, by reason", &removals, RED)?;
    // Lengths in powers of two from 16 characters.
    let mut length_bins = [0u64; 16];
    for &l in &kept.lengths {
        let bin = (l.max(16) as f64).log2() as usize - 4;
        length_bins[bin.min(15)] += 1;
    }
    let lengths: Vec<(String, f64)> = length_bins
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{}", 16usize << i), *n as f64))
        .collect();
    bars(
        &panels[1],
        "kept documents by length (characters, from)",
        &lengths,
        BLUE,
    )?;
    let langs: Vec<(String, f64)> = languages
        .iter()
        .map(|(l, n)| (l.clone(), *n as f64))
        .collect();
    bars(&panels[2], "kept documents by language", &langs, GREEN)?;
    let mut q = [0u64; 10];
    for &v in &kept.quality {
        q[((v * 10.0) as usize).min(9)] += 1;
    }
    let quality: Vec<(String, f64)> = q
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{:.1}", i as f64 / 10.0), *n as f64))
        .collect();
    bars(
        &panels[3],
        "quality score of kept documents",
        &quality,
        MAGENTA,
    )?;
    root.present()?;
    Ok(())
}
