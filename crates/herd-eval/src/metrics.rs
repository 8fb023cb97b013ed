//! Metrics as lm-evaluation-harness computes them: what each document scores, how the scores of
//! a task combine, and their standard errors (the closed form for means, the harness's seeded
//! bootstrap for perplexity).

use std::borrow::Cow;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::config::{MetricConfig, OutputType};
use crate::pyrandom::PyRandom;

/// A per-document metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Metric {
    /// 1 when the most likely choice (or the target, for `loglikelihood`: its greedy) is right.
    Acc,
    /// 1 when the choice with the best log-likelihood per character is right.
    AccNorm,
    /// 1 when the choice with the best log-likelihood per UTF-8 byte is right.
    AccBytes,
    /// 1 when the (filtered) generation equals the target.
    ExactMatch,
    /// The target's log-likelihood, aggregated as `exp(-mean)`.
    Perplexity,
    /// A text's log-likelihood over its words.
    WordPerplexity,
    /// A text's log-likelihood over its bytes.
    BytePerplexity,
    /// A text's negative log-likelihood in bits per byte.
    BitsPerByte,
    /// The chance that one of k of the document's programs passes its tests (the unbiased
    /// estimator over all of them).
    PassAtK(usize),
}

impl Metric {
    /// The metrics of one `metric_list` entry: one, or for `pass_at_k` one per `k`.
    pub fn from_entry(entry: &MetricConfig, output: OutputType) -> Result<Vec<Metric>> {
        if entry.metric == "pass_at_k" {
            if output != OutputType::GenerateUntil {
                bail!("metric `pass_at_k` does not apply to output_type {output:?}");
            }
            let Some(ks) = entry.k.as_ref().map(|k| k.to_vec()) else {
                bail!("metric `pass_at_k` needs `k` (a number or a list, e.g. [1, 10])");
            };
            if ks.is_empty() || ks.contains(&0) {
                bail!("metric `pass_at_k`: k must be one or more numbers of at least 1");
            }
            return Ok(ks.into_iter().map(Metric::PassAtK).collect());
        }
        if entry.k.is_some() {
            bail!("`k` is an option of pass_at_k, not of `{}`", entry.metric);
        }
        Ok(vec![Metric::parse(&entry.metric, output)?])
    }

    /// Reads a metric name valid for `output`.
    pub fn parse(name: &str, output: OutputType) -> Result<Metric> {
        use Metric::*;
        use OutputType::*;
        let (metric, valid): (Metric, &[OutputType]) = match name {
            "acc" => (Acc, &[MultipleChoice, Loglikelihood]),
            "acc_norm" => (AccNorm, &[MultipleChoice]),
            "acc_bytes" => (AccBytes, &[MultipleChoice]),
            "exact_match" => (ExactMatch, &[GenerateUntil, MultipleChoice]),
            "perplexity" => (Perplexity, &[Loglikelihood]),
            "word_perplexity" => (WordPerplexity, &[LoglikelihoodRolling]),
            "byte_perplexity" => (BytePerplexity, &[LoglikelihoodRolling]),
            "bits_per_byte" => (BitsPerByte, &[LoglikelihoodRolling]),
            other => bail!(
                "metric `{other}` is not one herd computes (acc, acc_norm, acc_bytes, \
                 exact_match, perplexity, word_perplexity, byte_perplexity, bits_per_byte, \
                 pass_at_k)"
            ),
        };
        if !valid.contains(&output) {
            bail!("metric `{name}` does not apply to output_type {output:?}");
        }
        Ok(metric)
    }

    /// The harness's name.
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
            Metric::AccBytes => "acc_bytes",
            Metric::ExactMatch => "exact_match",
            Metric::Perplexity => "perplexity",
            Metric::WordPerplexity => "word_perplexity",
            Metric::BytePerplexity => "byte_perplexity",
            Metric::BitsPerByte => "bits_per_byte",
            Metric::PassAtK(k) => return Cow::Owned(format!("pass@{k}")),
        })
    }

    /// The metrics of an output type without a `metric_list` (the harness's defaults).
    pub fn defaults(output: OutputType) -> Vec<Metric> {
        match output {
            OutputType::Loglikelihood => vec![Metric::Perplexity, Metric::Acc],
            OutputType::LoglikelihoodRolling => vec![
                Metric::WordPerplexity,
                Metric::BytePerplexity,
                Metric::BitsPerByte,
            ],
            OutputType::MultipleChoice => vec![Metric::Acc, Metric::AccNorm],
            OutputType::GenerateUntil => vec![Metric::ExactMatch],
        }
    }

    /// How the metric's values combine by default.
    pub fn default_aggregation(self) -> Aggregation {
        match self {
            Metric::Perplexity => Aggregation::Perplexity,
            Metric::WordPerplexity | Metric::BytePerplexity => Aggregation::WeightedPerplexity,
            Metric::BitsPerByte => Aggregation::BitsPerByte,
            _ => Aggregation::Mean,
        }
    }

    /// Whether larger is better by default.
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Metric::Perplexity
                | Metric::WordPerplexity
                | Metric::BytePerplexity
                | Metric::BitsPerByte
        )
    }
}

/// How per-document values of a metric combine into the task's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// The mean.
    Mean,
    /// `exp(-mean)` of log-likelihoods.
    Perplexity,
    /// `exp(-Σ loglikelihood / Σ weight)`.
    WeightedPerplexity,
    /// `-Σ loglikelihood / Σ bytes / ln 2`.
    BitsPerByte,
}

impl Aggregation {
    /// Reads an aggregation name.
    pub fn parse(name: &str) -> Result<Aggregation> {
        Ok(match name {
            "mean" => Aggregation::Mean,
            "perplexity" => Aggregation::Perplexity,
            "weighted_perplexity" => Aggregation::WeightedPerplexity,
            "bits_per_byte" => Aggregation::BitsPerByte,
            other => bail!(
                "aggregation `{other}`: use mean, perplexity, weighted_perplexity or bits_per_byte"
            ),
        })
    }

    /// Combines per-document values (`(value, weight)`; the weight is used by the weighted
    /// aggregations only).
    pub fn apply(self, items: &[(f64, f64)]) -> f64 {
        let mean = || python_sum(items.iter().map(|i| i.0)) / items.len() as f64;
        let weighted =
            || python_sum(items.iter().map(|i| i.0)) / python_sum(items.iter().map(|i| i.1));
        match self {
            Aggregation::Mean => mean(),
            Aggregation::Perplexity => (-mean()).exp(),
            Aggregation::WeightedPerplexity => (-weighted()).exp(),
            Aggregation::BitsPerByte => -weighted() / std::f64::consts::LN_2,
        }
    }

    /// The standard error the harness reports, `None` for "N/A": the closed form for a mean,
    /// `bootstrap_iters` seeded resamples for perplexity, none for the weighted aggregations.
    pub fn stderr(self, items: &[(f64, f64)], bootstrap_iters: usize) -> Option<f64> {
        if items.len() < 2 || bootstrap_iters == 0 {
            return None;
        }
        match self {
            Aggregation::Mean => {
                let values: Vec<f64> = items.iter().map(|i| i.0).collect();
                Some(sample_stddev(&values) / (values.len() as f64).sqrt())
            }
            Aggregation::Perplexity => Some(bootstrap_stderr(self, items, bootstrap_iters)),
            Aggregation::WeightedPerplexity | Aggregation::BitsPerByte => None,
        }
    }
}

/// Python's `sum` of floats: left to right from 0.
fn python_sum(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |a, b| a + b)
}

/// The sample standard deviation (n − 1), as the harness's `sample_stddev`.
fn sample_stddev(values: &[f64]) -> f64 {
    let mu = python_sum(values.iter().copied()) / values.len() as f64;
    let ss = python_sum(values.iter().map(|x| (x - mu) * (x - mu)));
    (ss / (values.len() - 1) as f64).sqrt()
}

/// The harness's bootstrap: chunks of 1000 resamples, chunk `i` drawn by
/// `random.Random(i).choices(xs, k=len(xs))`, the standard deviation of the statistics.
fn bootstrap_stderr(aggregation: Aggregation, items: &[(f64, f64)], iters: usize) -> f64 {
    let chunk = iters.min(1000);
    let mut stats = Vec::with_capacity(iters);
    let mut resample = Vec::with_capacity(items.len());
    for i in 0..iters / chunk {
        let mut rng = PyRandom::new(i as u64);
        for _ in 0..chunk {
            resample.clear();
            resample.extend(
                rng.choices(items.len(), items.len())
                    .into_iter()
                    .map(|j| items[j]),
            );
            stats.push(aggregation.apply(&resample));
        }
    }
    sample_stddev(&stats)
}

/// `exact_match` with the harness's options (from HF evaluate): patterns removed, then case,
/// punctuation and digits ignored as asked, then string equality.
pub fn exact_match(prediction: &str, reference: &str, options: &MetricConfig) -> Result<bool> {
    let mut pair = [prediction.to_string(), reference.to_string()];
    for pattern in options.regexes_to_ignore.iter().flatten() {
        let re = regex::Regex::new(pattern)
            .map_err(|e| anyhow::anyhow!("regexes_to_ignore `{pattern}`: {e}"))?;
        for s in &mut pair {
            *s = re.replace_all(s, "").into_owned();
        }
    }
    for s in &mut pair {
        if options.ignore_case == Some(true) {
            *s = s.to_lowercase();
        }
        if options.ignore_punctuation == Some(true) {
            s.retain(|c| !c.is_ascii_punctuation());
        }
        if options.ignore_numbers == Some(true) {
            s.retain(|c| !c.is_ascii_digit());
        }
    }
    Ok(pair[0] == pair[1])
}

/// The index of the first largest value (numpy's `argmax`).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Words in a text as the harness counts them for `word_perplexity`: `len(re.split(r"\s+", t))`,
/// one more than the runs of whitespace (Python's `\s`, which also matches U+001C..U+001F).
pub fn count_words(text: &str) -> usize {
    let space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let mut runs = 0;
    let mut in_run = false;
    for c in text.chars() {
        let s = space(c);
        if s && !in_run {
            runs += 1;
        }
        in_run = s;
    }
    runs + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregations_match_the_harness_formulas() {
        let items = [(-2.0, 4.0), (-4.0, 4.0)];
        assert_eq!(Aggregation::Mean.apply(&items), -3.0);
        assert!((Aggregation::Perplexity.apply(&items) - 3f64.exp()).abs() < 1e-12);
        assert!((Aggregation::WeightedPerplexity.apply(&items) - 0.75f64.exp()).abs() < 1e-12);
        let bpb = 6.0 / 8.0 / std::f64::consts::LN_2;
        assert!((Aggregation::BitsPerByte.apply(&items) - bpb).abs() < 1e-12);
    }

    #[test]
    fn mean_stderr_is_the_sample_formula() {
        let items: Vec<(f64, f64)> = [1.0, 0.0, 1.0, 1.0].iter().map(|&x| (x, 1.0)).collect();
        // sample stddev of [1, 0, 1, 1] is 0.5; / sqrt(4)
        assert_eq!(Aggregation::Mean.stderr(&items, 100_000), Some(0.25));
        assert_eq!(Aggregation::Mean.stderr(&items[..1], 100_000), None);
        assert_eq!(
            Aggregation::WeightedPerplexity.stderr(&items, 100_000),
            None
        );
    }

    #[test]
    fn perplexity_bootstrap_matches_the_harness() {
        // lm_eval.api.metrics.bootstrap_stderr(perplexity, xs, iters=2000) with
        // DISABLE_MULTIPROC=1, lm_eval 0.4.13, CPython 3.11.7.
        let xs = [-1.5, -0.25, -3.0, -0.75, -2.0];
        let items: Vec<(f64, f64)> = xs.iter().map(|&x| (x, 1.0)).collect();
        let got = Aggregation::Perplexity.stderr(&items, 2000).unwrap();
        assert!((got - BOOTSTRAP_EXPECTED).abs() < 1e-12, "{got}");
    }
    const BOOTSTRAP_EXPECTED: f64 = 2.289567195496009;

    #[test]
    fn exact_match_options() {
        let plain = MetricConfig::named("exact_match");
        assert!(exact_match("42", "42", &plain).unwrap());
        assert!(!exact_match("$42.", "42", &plain).unwrap());
        let loose = MetricConfig {
            ignore_case: Some(true),
            ignore_punctuation: Some(true),
            regexes_to_ignore: Some(vec![",".into(), r"\$".into(), r"(?s).*#### ".into()]),
            ..plain
        };
        assert!(exact_match("So #### $1,000.", "1000", &loose).unwrap());
        assert!(exact_match("ABC", "abc", &loose).unwrap());
    }

    #[test]
    fn words_are_split_on_runs_of_whitespace() {
        // len(re.split(r"\s+", t)) in Python
        assert_eq!(count_words("a b  c"), 3);
        assert_eq!(count_words(" a b "), 4);
        assert_eq!(count_words(""), 1);
        assert_eq!(count_words("a\n\n b"), 2);
    }
}
