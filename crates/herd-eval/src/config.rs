//! Task files: the subset of lm-evaluation-harness's YAML task format that herd reads. A key
//! outside the subset (`process_docs`, `!function`, `include`, `use_prompt`…) is refused by name
//! rather than ignored, so a task never silently means something else here than in the harness.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a task asks of the model (the harness's `output_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// The log-likelihood of each choice after the context; the best one is the prediction.
    MultipleChoice,
    /// The log-likelihood of the target after the context, and whether it is greedy.
    Loglikelihood,
    /// The log-likelihood of a whole text, in windows of the model's context.
    LoglikelihoodRolling,
    /// Greedy text generation until a stop string.
    GenerateUntil,
}

/// A task file, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The task's name.
    pub task: String,
    /// Tags grouping tasks (kept for the results, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Value>,
    /// Where the data comes from: only `json` (local JSON or JSON Lines files).
    pub dataset_path: String,
    /// Must be absent: `json` datasets have no configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    /// `data_files`: a path, a list of paths, or a map from split to path(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_kwargs: Option<DatasetKwargs>,
    /// The split few-shot examples come from when there is no `fewshot_split`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_split: Option<String>,
    /// The split evaluated when there is no test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_split: Option<String>,
    /// The split evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_split: Option<String>,
    /// The split few-shot examples are drawn from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewshot_split: Option<String>,
    /// The question: a column, a Jinja template, or (several contexts) an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_text: Option<Value>,
    /// The answer: a column, a template, an index into the choices, or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_target: Option<Value>,
    /// The choices: a column, a template rendering a list, a list or a map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_choice: Option<Value>,
    /// Text (a template) before the few-shot examples.
    #[serde(default)]
    pub description: String,
    /// Between a question and its answer.
    #[serde(default = "space")]
    pub target_delimiter: String,
    /// After each few-shot example.
    #[serde(default = "blank_line")]
    pub fewshot_delimiter: String,
    /// How few-shot examples are chosen and written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewshot_config: Option<FewshotConfig>,
    /// Few-shot examples per prompt (the command line's `--num-fewshot` overrides it unless 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_fewshot: Option<usize>,
    /// Metrics and their aggregation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_list: Option<Vec<MetricConfig>>,
    /// What the model is asked.
    #[serde(default = "generate_until")]
    pub output_type: OutputType,
    /// Generation settings (`until`, `max_gen_toks`, `do_sample`, `temperature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_kwargs: Option<GenerationKwargs>,
    /// Generations per document (sampled ones differ; pass@k draws from them).
    #[serde(default = "one")]
    pub repeats: usize,
    /// The task runs model-written code. The harness asks the user to confirm; herd always runs
    /// such code in its sandbox, so the key is accepted and changes nothing.
    #[serde(default)]
    pub unsafe_code: bool,
    /// Answer extraction pipelines for generated text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_list: Option<Vec<FilterPipeline>>,
    /// Text the answer starts with (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_prefix: Option<String>,
    /// Whether contamination reports cover this task.
    #[serde(default)]
    pub should_decontaminate: bool,
    /// The text of a document that contamination is checked on (a column or a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_decontamination_query: Option<String>,
    /// Free-form; `version` is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

fn space() -> String {
    " ".into()
}
fn blank_line() -> String {
    "\n\n".into()
}
fn generate_until() -> OutputType {
    OutputType::GenerateUntil
}
fn one() -> usize {
    1
}

/// `dataset_kwargs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetKwargs {
    /// A path, a list of paths (both the `train` split), or a map from split to path(s).
    pub data_files: Value,
}

/// `fewshot_config`: fields that override the task's for few-shot examples.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FewshotConfig {
    /// `default` (seeded random draws) or `first_n` (in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    /// The split examples come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Examples written in the task file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<serde_json::Map<String, Value>>>,
    /// Question of an example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_text: Option<Value>,
    /// Answer of an example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_target: Option<Value>,
    /// Choices of an example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_choice: Option<Value>,
    /// Answer prefix of an example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_prefix: Option<String>,
    /// After each example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewshot_delimiter: Option<String>,
    /// Between an example's question and answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_delimiter: Option<String>,
}

/// One entry of `metric_list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// The metric's name.
    pub metric: String,
    /// How per-document values combine (`mean`, `perplexity`, `weighted_perplexity`,
    /// `bits_per_byte`); the metric's own by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<String>,
    /// Whether a larger value is better; the metric's own by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub higher_is_better: Option<bool>,
    /// `exact_match`: compare ignoring case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_case: Option<bool>,
    /// `exact_match`: compare ignoring ASCII punctuation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_punctuation: Option<bool>,
    /// `exact_match`: compare ignoring digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_numbers: Option<bool>,
    /// `exact_match`: patterns removed from both sides first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexes_to_ignore: Option<Vec<String>>,
    /// `pass_at_k`: the k of each pass@k reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<OneOrMany<usize>>,
}

impl MetricConfig {
    /// The entry of a metric with its defaults (no options).
    pub fn named(metric: &str) -> MetricConfig {
        MetricConfig {
            metric: metric.into(),
            aggregation: None,
            higher_is_better: None,
            ignore_case: None,
            ignore_punctuation: None,
            ignore_numbers: None,
            regexes_to_ignore: None,
            k: None,
        }
    }
}

/// `generation_kwargs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationKwargs {
    /// Stop strings (the generation is cut before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<OneOrMany<String>>,
    /// Most new tokens (256 by default, as the harness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gen_toks: Option<usize>,
    /// Sampling instead of greedy decoding (as in transformers, only `true` samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_sample: Option<bool>,
    /// Softmax temperature when sampling (1 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling's probability mass (1: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling among the k most likely tokens only (0: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
}

/// How tokens are chosen when a task samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature.
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Most likely tokens kept (0: all).
    pub top_k: usize,
}

impl GenerationKwargs {
    /// The sampling settings, or `None` for greedy decoding: transformers samples only with
    /// `do_sample: true`, whatever the temperature says.
    pub fn sampling(&self) -> Option<Sampling> {
        (self.do_sample == Some(true)).then(|| Sampling {
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
        })
    }
}

/// One value or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One.
    One(T),
    /// Several.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// As a list.
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One `filter_list` entry: a named pipeline of filters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPipeline {
    /// The name metrics are reported under (`"exact_match,strict-match"`).
    pub name: String,
    /// The steps, in order.
    pub filter: Vec<FilterStep>,
}

/// One filter step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "function", rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterStep {
    /// The regex's match (group `group_select` of the first match, or of the last with -1)…
    Regex {
        /// The pattern.
        #[serde(default = "default_regex")]
        regex_pattern: String,
        /// Which match: 0 the first, -1 the last.
        #[serde(default)]
        group_select: i64,
        /// …or this when nothing matches.
        #[serde(default = "invalid")]
        fallback: String,
    },
    /// Keeps the first generation.
    TakeFirst,
    /// Lower-cases.
    Lowercase,
    /// Upper-cases.
    Uppercase,
    /// Removes leading whitespace.
    RemoveWhitespace,
    /// Puts the prompt (the context the model continued) before each generation, making whole
    /// programs of code completions: herd's built-in form of HumanEval's
    /// `!function utils.build_predictions` in lm-evaluation-harness.
    BuildPredictions,
}

fn default_regex() -> String {
    r"#### (\-?[0-9\.\,]+)".into()
}
fn invalid() -> String {
    "[invalid]".into()
}

impl TaskConfig {
    /// Reads a task file; errors name the file and the key (with its line).
    pub fn read(path: &Path) -> Result<TaskConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading task file {}", path.display()))?;
        TaskConfig::parse(&text).with_context(|| format!("task file {}", path.display()))
    }

    /// Parses a task file's text and checks what the format allows but herd does not do.
    pub fn parse(text: &str) -> Result<TaskConfig> {
        let config: TaskConfig = serde_norway::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{e} (herd reads the subset of lm-evaluation-harness's task format described in \
                 docs/EVALUATION.md)"
            )
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.dataset_path != "json" {
            bail!(
                "dataset_path `{}`: herd reads local data only (`dataset_path: json` with \
                 `dataset_kwargs: {{data_files: ...}}`)",
                self.dataset_path
            );
        }
        if self.dataset_name.is_some() {
            bail!("dataset_name: `json` datasets have no configurations; remove it");
        }
        if self.dataset_kwargs.is_none() {
            bail!("dataset_kwargs.data_files is required (the data's path)");
        }
        if self.repeats == 0 {
            bail!("repeats must be at least 1");
        }
        if self.repeats > 1 && self.output_type != OutputType::GenerateUntil {
            bail!(
                "repeats {} is only for output_type generate_until",
                self.repeats
            );
        }
        if self.test_split.is_none() && self.validation_split.is_none() {
            bail!("name the split to evaluate: test_split or validation_split");
        }
        if let Some(sampler) = self
            .fewshot_config
            .as_ref()
            .and_then(|f| f.sampler.as_deref())
        {
            if !["default", "first_n"].contains(&sampler) {
                bail!("fewshot_config.sampler `{sampler}`: use `default` or `first_n`");
            }
        }
        if let Some(kwargs) = &self.generation_kwargs {
            if self.output_type != OutputType::GenerateUntil {
                bail!("generation_kwargs is only for output_type generate_until");
            }
            if let Some(s) = kwargs.sampling() {
                if !(s.temperature > 0.0 && s.temperature.is_finite()) {
                    bail!(
                        "generation_kwargs.temperature {}: sampling needs a temperature above 0 \
                         (or do_sample: false for greedy decoding)",
                        s.temperature
                    );
                }
                if !(s.top_p > 0.0 && s.top_p <= 1.0) {
                    bail!("generation_kwargs.top_p {}: must be in (0, 1]", s.top_p);
                }
            }
        }
        for m in self.metric_list.iter().flatten() {
            for metric in crate::metrics::Metric::from_entry(m, self.output_type)? {
                if let crate::metrics::Metric::PassAtK(k) = metric {
                    if k > self.repeats {
                        bail!(
                            "metric pass_at_k: k {k} needs at least {k} generations per \
                             document (repeats is {})",
                            self.repeats
                        );
                    }
                }
            }
            if let Some(a) = &m.aggregation {
                crate::metrics::Aggregation::parse(a)?;
            }
        }
        if self.output_type == OutputType::MultipleChoice && self.doc_to_choice.is_none() {
            bail!("output_type multiple_choice needs doc_to_choice");
        }
        Ok(())
    }

    /// The files of each split: `data_files` with relative paths taken from `data_dir`.
    pub fn data_files(&self, data_dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
        let files = &self.dataset_kwargs.as_ref().expect("checked").data_files;
        let paths = |v: &Value, key: &str| -> Result<Vec<PathBuf>> {
            let list = match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| format!("{key}: a list of paths expected"))?,
                _ => bail!("{key}: a path or a list of paths expected"),
            };
            Ok(list.into_iter().map(|p| data_dir.join(p)).collect())
        };
        match files {
            Value::Object(splits) => splits
                .iter()
                .map(|(split, v)| Ok((split.clone(), paths(v, &format!("data_files.{split}"))?)))
                .collect(),
            other => Ok(vec![("train".into(), paths(other, "data_files")?)]),
        }
    }

    /// The version reported in the results (`metadata.version`, else 0).
    pub fn version(&self) -> Value {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("version").cloned())
            .unwrap_or(Value::from(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARC: &str = r#"
task: arc_easy
dataset_path: json
dataset_kwargs: {data_files: {test: arc.jsonl}}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: gold
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
metadata: {version: 1.0}
"#;

    #[test]
    fn reads_a_multiple_choice_task() {
        let c = TaskConfig::parse(ARC).unwrap();
        assert_eq!(c.output_type, OutputType::MultipleChoice);
        assert_eq!(c.target_delimiter, " ");
        assert_eq!(c.fewshot_delimiter, "\n\n");
        let files = c.data_files(Path::new("/data")).unwrap();
        assert_eq!(
            files,
            vec![("test".into(), vec![PathBuf::from("/data/arc.jsonl")])]
        );
        assert_eq!(c.version(), serde_json::json!(1.0));
    }

    #[test]
    fn refuses_what_it_does_not_do_by_name() {
        let with = |extra: &str| TaskConfig::parse(&format!("{ARC}{extra}\n"));
        let err = with("process_docs: !function utils.process_docs").unwrap_err();
        assert!(format!("{err:#}").contains("process_docs"), "{err:#}");
        let err = with("use_prompt: promptsource:foo").unwrap_err();
        assert!(format!("{err:#}").contains("use_prompt"), "{err:#}");
        let err =
            TaskConfig::parse(&ARC.replace("dataset_path: json", "dataset_path: allenai/ai2_arc"))
                .unwrap_err();
        assert!(format!("{err:#}").contains("allenai/ai2_arc"), "{err:#}");
        let err = TaskConfig::parse(&ARC.replace("metric: acc,", "metric: bleu,")).unwrap_err();
        assert!(format!("{err:#}").contains("bleu"), "{err:#}");
    }

    #[test]
    fn code_tasks_are_checked() {
        for name in ["humaneval", "humaneval_20"] {
            let c = crate::builtin::task_config(name).unwrap();
            assert!(c.unsafe_code);
        }
        let sampled = crate::builtin::task_config("humaneval_20").unwrap();
        let s = sampled
            .generation_kwargs
            .as_ref()
            .unwrap()
            .sampling()
            .unwrap();
        assert_eq!((s.temperature, s.top_p), (0.8, 0.95));
        let text = crate::builtin::TASKS
            .iter()
            .find(|t| t.0 == "humaneval_20")
            .unwrap()
            .1;
        let err = |from: &str, to: &str| {
            assert!(text.contains(from), "{from}");
            format!(
                "{:#}",
                TaskConfig::parse(&text.replace(from, to)).unwrap_err()
            )
        };
        assert!(err("k: [1, 10]", "k: [1, 30]").contains("k 30 needs at least 30"));
        assert!(err("k: [1, 10]", "k: []").contains("k must be"));
        assert!(err("metric: pass_at_k", "metric: exact_match").contains("`k` is an option"));
        assert!(err("temperature: 0.8", "temperature: 0").contains("temperature 0"));
        assert!(err("top_p: 0.95", "top_p: 1.5").contains("top_p 1.5"));
        assert!(err("function: \"build_predictions\"", "function: \"custom\"").contains("custom"));
        let mc = ARC.to_string() + "repeats: 3\n";
        let e = format!("{:#}", TaskConfig::parse(&mc).unwrap_err());
        assert!(e.contains("repeats 3 is only for"), "{e}");
        // Greedy unless do_sample is true, as transformers.
        let greedy = text.replace("do_sample: true", "do_sample: false");
        let c = TaskConfig::parse(&greedy).unwrap();
        assert!(c.generation_kwargs.unwrap().sampling().is_none());
    }
}
