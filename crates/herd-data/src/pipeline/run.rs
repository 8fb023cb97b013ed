//! Running a pipeline for one task: phases of streamed document stages, each corpus stage
//! (de-duplication, token divergence) first reading everything the previous phase kept (pass 1:
//! URLs and dates, hashes, signatures, line or token counts), then deciding document by
//! document as the next phase streams (pass 2).
//!
//! ```text
//! OUT/docs/RRRRR-FFFFF.jsonl.gz     kept documents of input file F of task R: {"id", "text", meta…}
//! OUT/counts/RRRRR.json             what each stage removed, for the task
//! OUT/counts/RRRRR/phase-K/RRRRR-FFFFF.counts.json   what phase K did to file F, and the
//!                                   fingerprint of what it was made from
//! OUT/removed/RRRRR-FFFFF.phase-K.jsonl.gz   with `[output] removed = true`: the documents
//!                                   phase K removed, each with `removed_by` (the reason)
//! OUT/.work/RRRRR/phase-K/…         the phases before the last (removed when the task is done)
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::io::{counts_path, read_chunks, read_counts, write_counts, Input, JsonlGz, Outputs};
use super::stage::{CorpusStage, Doc, DocStage, Stage};
use super::Pipeline;
use crate::error::{Error, Result};
use crate::filters::Verdict;
use crate::line_dedup::LineCounts;
use crate::minhash::keep_first_of_clusters;
use crate::reader::{input_files, Fields};
use crate::token_kl::{outlier_threshold, TokenDistribution};
use crate::url_dedup::NewestByUrl;
use herd_util::fingerprint;
use herd_util::fs::{write_atomic, Existing, RunDir};
use herd_util::seeded::fnv1a64;

/// Which task to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Tasks the input is split into.
    pub tasks: usize,
    /// This task (0-based).
    pub rank: usize,
    /// Delete an output folder that holds a run of other inputs or settings (one task only).
    pub overwrite: bool,
}

/// Where a run is, after each file of each phase.
pub struct Progress<'a> {
    /// Phase (0-based) and how many there are.
    pub phase: (usize, usize),
    /// Files of this phase done and how many there are.
    pub file: (usize, usize),
    /// Counts of this phase so far.
    pub counts: &'a Counts,
}

/// What a phase did to one input file's documents (and, summed, to a task's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Documents read.
    pub docs_in: u64,
    /// Documents written.
    pub docs_out: u64,
    /// UTF-8 bytes of text read.
    pub bytes_in: u64,
    /// Bytes of text written.
    pub bytes_out: u64,
    /// Records that could not be read (with the first few places and reasons).
    pub bad_records: u64,
    /// The first bad records.
    pub bad_examples: Vec<String>,
    /// Documents removed, by stage reason.
    pub removed: BTreeMap<String, u64>,
    /// Lines removed by line de-duplication.
    pub lines_removed: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.docs_in += other.docs_in;
        self.docs_out += other.docs_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.bad_records += other.bad_records;
        for e in other
            .bad_examples
            .iter()
            .take(10usize.saturating_sub(self.bad_examples.len()))
        {
            self.bad_examples.push(e.clone());
        }
        for (k, v) in &other.removed {
            *self.removed.entry(k.clone()).or_default() += v;
        }
        self.lines_removed += other.lines_removed;
    }
}

/// A task's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Input files of this task.
    pub files: usize,
    /// Per phase, its stages and counts.
    pub phases: Vec<(Vec<String>, Counts)>,
    /// Seconds of this session (not of earlier, interrupted ones).
    pub seconds: f64,
}

/// A phase: an optional corpus stage, then document stages.
struct Phase<'p> {
    /// gzip level of its output: fast for the phases a later one reads again, 6 for the last.
    level: u32,
    corpus: Option<(&'p str, &'p CorpusStage)>,
    docs: Vec<(&'p str, &'p DocStage)>,
    /// How many of the pipeline's stages this and the earlier phases apply.
    through: usize,
}

fn phases(pipeline: &Pipeline) -> Vec<Phase<'_>> {
    let mut out = vec![Phase {
        level: 1,
        corpus: None,
        docs: Vec::new(),
        through: 0,
    }];
    for (i, (name, stage)) in pipeline.stages.iter().enumerate() {
        match stage {
            Stage::Doc(s) => out.last_mut().expect("one phase").docs.push((name, s)),
            Stage::Corpus(s) => out.push(Phase {
                level: 1,
                corpus: Some((name, s)),
                docs: Vec::new(),
                through: i,
            }),
        }
        out.last_mut().expect("one phase").through = i + 1;
    }
    if out.len() > 1 && out[0].docs.is_empty() {
        out.remove(0); // a corpus stage first reads the input files itself
    }
    out.last_mut().expect("one phase").level = 6;
    out
}

/// Runs task `options.rank` of `pipeline`, resuming from the files already written.
pub fn run(
    pipeline: &Pipeline,
    options: &RunOptions,
    on_file: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary> {
    let started = Instant::now();
    if options.tasks == 0 || options.rank >= options.tasks {
        return Err(Error::format(
            &pipeline.out,
            format!(
                "task {} of {}: rank must be below the task count",
                options.rank, options.tasks
            ),
        ));
    }
    if options.overwrite && options.tasks > 1 {
        return Err(Error::format(
            &pipeline.out,
            "--overwrite with several tasks would let each task delete the others' output: \
             remove the folder once, then start the tasks",
        ));
    }
    let files: Vec<PathBuf> = input_files(&pipeline.inputs)?
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % options.tasks == options.rank)
        .map(|(_, f)| f)
        .collect();
    let settings = serde_json::json!({
        "stages": pipeline.stage_fingerprints,
        "fields": [&pipeline.fields.text, &pipeline.fields.url, &pipeline.fields.date],
        "removed": pipeline.keep_removed,
    });
    let existing = if options.overwrite {
        Existing::Overwrite
    } else {
        Existing::Resume
    };
    let marker =
        serde_json::json!({"pipeline": fingerprint::of_json(&settings), "tasks": options.tasks});
    RunDir::open(&pipeline.out, "data run", &marker, existing)?;
    // What this task's output is made from: its input files' contents, then per phase the
    // settings of every stage up to it.
    let inputs: Vec<String> = files
        .iter()
        .map(|f| fingerprint::of_file(f))
        .collect::<std::result::Result<_, _>>()?;
    let task = serde_json::json!({"inputs": inputs, "tasks": options.tasks, "rank": options.rank, "settings": settings});
    let rank = format!("{:05}", options.rank);
    let phases = phases(pipeline);
    let phase_fingerprints: Vec<String> = phases
        .iter()
        .map(|p| {
            fingerprint::of_json(&serde_json::json!({
                "task": task,
                "stages": &pipeline.stage_fingerprints[..p.through],
            }))
        })
        .collect();
    let work = pipeline.out.join(".work").join(&rank);
    let dir_of = |k: usize| -> PathBuf {
        if k + 1 == phases.len() {
            pipeline.out.join("docs")
        } else {
            work.join(format!("phase-{k}"))
        }
    };
    // Per (phase, file) counts live apart from the documents, so `docs/` holds documents only
    // (a tokenizer or another pipeline reads it as input) and a finished task reruns as a no-op.
    let counts_of = |k: usize| {
        pipeline
            .out
            .join("counts")
            .join(&rank)
            .join(format!("phase-{k}"))
    };
    let name_of = |f: usize| format!("{rank}-{f:05}");
    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    let removed_dir = pipeline.keep_removed.then(|| pipeline.out.join("removed"));
    if let Some(dir) = &removed_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    for (k, phase) in phases.iter().enumerate() {
        let dir = dir_of(k);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let counts_dir = counts_of(k);
        std::fs::create_dir_all(&counts_dir).map_err(|e| Error::io(&counts_dir, e))?;
        let inputs: Vec<Input> = (0..files.len())
            .map(|f| match k {
                0 => Input::Raw(files[f].clone()),
                _ => Input::Phase(dir_of(k - 1).join(format!("{}.jsonl.gz", name_of(f)))),
            })
            .collect();
        let fingerprint = &phase_fingerprints[k];
        let done: Vec<Option<Counts>> = (0..files.len())
            .map(|f| read_counts(&counts_path(&counts_dir, &name_of(f)), fingerprint))
            .collect::<Result<_>>()?;
        let (decide, offsets) = match phase.corpus {
            Some((_, stage)) if done.iter().any(Option::is_none) => {
                first_pass(stage, &inputs, &pipeline.fields)?
            }
            _ => (Decisions::None, vec![0; files.len()]),
        };
        // Files are independent given their first document's index: they run in parallel.
        let total = std::sync::Mutex::new((Counts::default(), 0usize));
        let on_file = std::sync::Mutex::new(&mut *on_file);
        let results: Vec<Result<()>> = (0..files.len())
            .into_par_iter()
            .map(|f| {
                let name = name_of(f);
                let counts = if let Some(counts) = &done[f] {
                    counts.clone()
                } else {
                    let out = Outputs {
                        kept: dir.join(format!("{name}.jsonl.gz")),
                        removed: removed_dir
                            .as_ref()
                            .map(|d| d.join(format!("{name}.phase-{k}.jsonl.gz"))),
                    };
                    let mut index = offsets[f];
                    let c = process_file(
                        &inputs[f],
                        &pipeline.fields,
                        phase,
                        &decide,
                        &mut index,
                        &out,
                    )?;
                    write_counts(&counts_path(&counts_dir, &name), &c, fingerprint)?;
                    c
                };
                let mut total = total.lock().expect("counts lock");
                total.0.add(&counts);
                total.1 += 1;
                (on_file.lock().expect("progress lock"))(Progress {
                    phase: (k, phases.len()),
                    file: (total.1, files.len()),
                    counts: &total.0,
                });
                Ok(())
            })
            .collect();
        results.into_iter().collect::<Result<()>>()?;
        let total = total.into_inner().expect("counts lock").0;
        let mut names: Vec<String> = phase.corpus.iter().map(|(n, _)| n.to_string()).collect();
        names.extend(phase.docs.iter().map(|(n, _)| n.to_string()));
        summary.phases.push((names, total));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let counts_dir = pipeline.out.join("counts");
    std::fs::create_dir_all(&counts_dir).map_err(|e| Error::io(&counts_dir, e))?;
    let bytes = serde_json::to_vec_pretty(&summary).expect("json");
    write_atomic(&counts_dir.join(format!("{rank}.json")), &bytes)?;
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    }
    Ok(summary)
}

/// What a corpus stage decided in its first pass.
enum Decisions {
    /// Nothing to decide.
    None,
    /// Per document (in phase order), whether it is kept.
    Keep(Vec<bool>),
    /// Line counts to strip documents with.
    Lines(LineCounts, u32),
    /// Per document its token divergence (NaN: not judged), and the outlier threshold.
    Divergence(Vec<f32>, f64),
}

/// Pass 1 of a corpus stage over all of the previous phase's documents: its decisions, and the
/// index of each file's first document.
fn first_pass(
    stage: &CorpusStage,
    inputs: &[Input],
    fields: &Fields,
) -> Result<(Decisions, Vec<u64>)> {
    let mut offsets = Vec::with_capacity(inputs.len());
    let mut n = 0u64;
    let (mut seen, mut keep, mut keys) = (HashSet::new(), Vec::new(), Vec::new());
    let mut lines = LineCounts::default();
    let mut newest = NewestByUrl::default();
    let mut tokens = TokenDistribution::default();
    let mut ignored = Counts::default();
    for input in inputs {
        offsets.push(n);
        read_chunks(input, fields, &mut ignored, &mut |docs| {
            n += docs.len() as u64;
            match stage {
                CorpusStage::Url => docs
                    .iter()
                    .for_each(|d| newest.add(d.meta_str("url"), d.meta_str("date"))),
                CorpusStage::Exact => {
                    let hashes: Vec<u64> = docs
                        .par_iter()
                        .map(|d| fnv1a64(d.text.as_bytes()))
                        .collect();
                    keep.extend(hashes.into_iter().map(|h| seen.insert(h)));
                }
                CorpusStage::MinHash(hasher) => {
                    let chunk: Vec<Vec<u64>> = docs
                        .par_iter()
                        .map(|d| hasher.band_keys(&hasher.signature(&d.text)))
                        .collect();
                    keys.extend(chunk.into_iter().flatten());
                }
                CorpusStage::Lines { .. } => docs.iter().for_each(|d| lines.add(&d.text)),
                CorpusStage::TokenKl(_) => docs.iter().for_each(|d| tokens.add(&d.text)),
            }
            Ok(())
        })?;
    }
    let decisions = match stage {
        CorpusStage::Url => Decisions::Keep(newest.into_decisions()),
        CorpusStage::Exact => Decisions::Keep(keep),
        CorpusStage::MinHash(hasher) => {
            Decisions::Keep(keep_first_of_clusters(&keys, hasher.bands()))
        }
        CorpusStage::Lines { max_occurrences } => Decisions::Lines(lines, *max_occurrences),
        CorpusStage::TokenKl(config) => {
            // A second read: each document's divergence from the counts just made.
            let mut kls = Vec::with_capacity(n as usize);
            for input in inputs {
                read_chunks(input, fields, &mut ignored, &mut |docs| {
                    kls.par_extend(docs.par_iter().map(|d| {
                        tokens
                            .kl(&d.text, config.min_words)
                            .map_or(f32::NAN, |k| k as f32)
                    }));
                    Ok(())
                })?;
            }
            let threshold = config.max_kl.unwrap_or_else(|| {
                let judged: Vec<f64> = kls
                    .iter()
                    .filter(|k| !k.is_nan())
                    .map(|&k| k as f64)
                    .collect();
                outlier_threshold(&judged, config.mads)
            });
            Decisions::Divergence(kls, threshold)
        }
    };
    Ok((decisions, offsets))
}

/// One document through the phase: the corpus stage's decision, then the document stages.
fn process(doc: &mut Doc, index: u64, phase: &Phase, decide: &Decisions) -> (Verdict, u64) {
    let mut lines = 0;
    let verdict = match decide {
        Decisions::Keep(keep) if !keep[index as usize] => {
            Verdict::Drop(phase.corpus.map_or("dedup", |(_, s)| s.reason()))
        }
        Decisions::Lines(counts, max) => {
            let (text, removed) = counts.strip(&doc.text, *max);
            lines = removed as u64;
            doc.text = text;
            if doc.text.trim().is_empty() {
                Verdict::Drop("line_dedup_empty")
            } else {
                Verdict::Keep
            }
        }
        Decisions::Divergence(kls, threshold) => {
            let kl = kls[index as usize];
            if kl.is_nan() {
                Verdict::Keep
            } else {
                doc.meta.insert("token_kl".into(), serde_json::json!(kl));
                if kl as f64 > *threshold {
                    Verdict::Drop("token_kl")
                } else {
                    Verdict::Keep
                }
            }
        }
        _ => Verdict::Keep,
    };
    if verdict != Verdict::Keep {
        return (verdict, lines);
    }
    for (_, stage) in &phase.docs {
        let v = stage.apply(doc);
        if v != Verdict::Keep {
            return (v, lines);
        }
    }
    (Verdict::Keep, lines)
}

/// Pass 2 for one file: reads, decides, writes the kept (and removed) documents, atomically.
fn process_file(
    input: &Input,
    fields: &Fields,
    phase: &Phase,
    decide: &Decisions,
    index: &mut u64,
    out: &Outputs,
) -> Result<Counts> {
    let mut kept = JsonlGz::create(&out.kept, phase.level)?;
    let mut removed = match &out.removed {
        Some(path) => Some(JsonlGz::create(path, 6)?),
        None => None,
    };
    let mut counts = Counts::default();
    let mut sink = |docs: Vec<Doc>, counts: &mut Counts| -> Result<()> {
        let first = *index;
        *index += docs.len() as u64;
        let results: Vec<(Doc, Verdict, u64, u64)> = docs
            .into_par_iter()
            .enumerate()
            .map(|(i, mut doc)| {
                let bytes_in = doc.text.len() as u64;
                let (verdict, lines) = process(&mut doc, first + i as u64, phase, decide);
                (doc, verdict, lines, bytes_in)
            })
            .collect();
        for (doc, verdict, lines, bytes_in) in results {
            counts.docs_in += 1;
            counts.bytes_in += bytes_in;
            counts.lines_removed += lines;
            match verdict {
                Verdict::Keep => {
                    counts.docs_out += 1;
                    counts.bytes_out += doc.text.len() as u64;
                    kept.write(doc, None)?;
                }
                Verdict::Drop(reason) => {
                    *counts.removed.entry(reason.to_string()).or_default() += 1;
                    if let Some(removed) = removed.as_mut() {
                        removed.write(doc, Some(("removed_by", reason)))?;
                    }
                }
            }
        }
        Ok(())
    };
    let mut read_counts = Counts::default();
    read_chunks(input, fields, &mut read_counts, &mut |docs| {
        sink(docs, &mut counts)
    })?;
    counts.bad_records = read_counts.bad_records;
    counts.bad_examples = read_counts.bad_examples;
    kept.finish()?;
    if let Some(removed) = removed {
        removed.finish()?;
    }
    Ok(counts)
}
