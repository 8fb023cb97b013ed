//! A task ready to run: its documents, its few-shot pool, and the harness's way of turning a
//! document into a prompt (`fewshot_context`, `build_qa_turn`) and into requests
//! (`construct_requests`), field by field as lm-evaluation-harness 0.4 does.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::config::{FilterPipeline, FilterStep, MetricConfig, OutputType, Sampling, TaskConfig};
use crate::data::{read_docs, Doc};
use crate::literal;
use crate::metrics::{Aggregation, Metric};
use crate::pyrandom::PyRandom;
use crate::template::{Field, Templates};

/// The harness's default few-shot seed (`fewshot_random_seed`).
pub const FEWSHOT_SEED: u64 = 1234;

/// The harness's default generation budget (`max_gen_toks`).
pub const DEFAULT_MAX_GEN_TOKS: usize = 256;

/// A metric of a task with its aggregation and options.
#[derive(Debug, Clone)]
pub struct MetricSpec {
    /// The metric.
    pub metric: Metric,
    /// How values combine.
    pub aggregation: Aggregation,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// The task file's entry (the `exact_match` options).
    pub options: MetricConfig,
}

/// A document's question: text, or (several contexts, one per choice) the right one's index.
#[derive(Debug, Clone, PartialEq)]
pub enum Question {
    /// The question text.
    Text(String),
    /// The index of the correct context among the choices.
    Index(usize),
}

/// What the model is asked for one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The log-likelihood of `continuation` after `context`.
    Loglikelihood {
        /// The conditioning text.
        context: String,
        /// The scored text.
        continuation: String,
    },
    /// The log-likelihood of a whole text.
    Rolling(String),
    /// `repeats` generations after `context` until a stop string or `max_gen_toks` tokens.
    Generate {
        /// The prompt.
        context: String,
        /// Stop strings (the model's end-of-text is added by the runner).
        until: Vec<String>,
        /// Most new tokens.
        max_gen_toks: usize,
        /// How tokens are drawn; `None` is greedy.
        sampling: Option<Sampling>,
        /// Generations asked for.
        repeats: usize,
    },
}

/// Per-field readers, for the evaluated documents or for few-shot examples.
struct Fields {
    text: Option<Field>,
    target: Option<Field>,
    choice: Option<Field>,
    gen_prefix: Option<String>,
    target_delimiter: String,
    fewshot_delimiter: String,
}

/// A task loaded with its data.
pub struct Task {
    /// The task file.
    pub config: TaskConfig,
    /// Documents evaluated, in order.
    pub docs: Vec<Doc>,
    /// Few-shot examples per prompt.
    pub num_fewshot: usize,
    /// The metrics reported.
    pub metrics: Vec<MetricSpec>,
    /// The answer-extraction pipelines (`none`: take the generation as is).
    pub filters: Vec<FilterPipeline>,
    pool: Vec<Doc>,
    /// Whether the evaluated document is removed from its own few-shot draw.
    pool_is_eval_split: bool,
    first_n: bool,
    templates: Templates,
    /// `doc_to_decontamination_query`, when the task gives one.
    decontamination: Option<Field>,
    main: Fields,
    fewshot: Fields,
    /// Documents' questions are indices of the right context (`doc_to_text` gives an int).
    multiple_input: bool,
    /// Targets are lists (any of them counts).
    pub multiple_target: bool,
    rng: PyRandom,
}

impl Task {
    /// Loads a task's data (relative `data_files` from `data_dir`) and compiles its fields.
    /// `num_fewshot` overrides the file's unless the file says 0, as the harness does.
    pub fn load(config: TaskConfig, data_dir: &Path, num_fewshot: Option<usize>) -> Result<Task> {
        let name = config.task.clone();
        Task::build(config, data_dir, num_fewshot).with_context(|| format!("task {name}"))
    }

    fn build(config: TaskConfig, data_dir: &Path, num_fewshot: Option<usize>) -> Result<Task> {
        let mut splits = Vec::new();
        for (split, files) in config.data_files(data_dir)? {
            let mut docs = Vec::new();
            for f in files {
                docs.extend(read_docs(&f)?);
            }
            splits.push((split, docs));
        }
        let split = |name: &Option<String>, key: &str| -> Result<Option<Vec<Doc>>> {
            let Some(name) = name else { return Ok(None) };
            let found = splits
                .iter()
                .find(|(s, _)| s == name)
                .map(|(_, d)| d.clone());
            found.map(Some).ok_or_else(|| {
                let have: Vec<&str> = splits.iter().map(|(s, _)| s.as_str()).collect();
                anyhow!(
                    "{key} `{name}` is not in data_files (splits: {})",
                    have.join(", ")
                )
            })
        };
        let docs = match split(&config.test_split, "test_split")? {
            Some(d) => d,
            None => split(&config.validation_split, "validation_split")?.expect("checked"),
        };
        let fs = config.fewshot_config.clone().unwrap_or_default();
        let fewshot_split = fs.split.clone().or(config.fewshot_split.clone());
        let pool = if let Some(docs) = split(&fewshot_split, "fewshot_split")? {
            docs
        } else if let Some(samples) = &fs.samples {
            samples.clone()
        } else if let Some(d) = split(&config.training_split, "training_split")? {
            d
        } else if let Some(d) = split(&config.validation_split, "validation_split")? {
            d
        } else {
            docs.clone()
        };
        let columns: Vec<String> = docs[0].keys().cloned().collect();
        let mut templates = Templates::new();
        let mut field = |key: &str, v: &Option<Value>| -> Result<Option<Field>> {
            v.as_ref()
                .map(|v| templates.field(key, v, &columns))
                .transpose()
        };
        let main = Fields {
            text: field("doc_to_text", &config.doc_to_text)?,
            target: field("doc_to_target", &config.doc_to_target)?,
            choice: field("doc_to_choice", &config.doc_to_choice)?,
            gen_prefix: config.gen_prefix.clone(),
            target_delimiter: config.target_delimiter.clone(),
            fewshot_delimiter: config.fewshot_delimiter.clone(),
        };
        let fewshot = Fields {
            text: field(
                "fewshot_config.doc_to_text",
                &fs.doc_to_text.clone().or(config.doc_to_text.clone()),
            )?,
            target: field(
                "fewshot_config.doc_to_target",
                &fs.doc_to_target.clone().or(config.doc_to_target.clone()),
            )?,
            choice: field(
                "fewshot_config.doc_to_choice",
                &fs.doc_to_choice.clone().or(config.doc_to_choice.clone()),
            )?,
            gen_prefix: fs.gen_prefix.clone().or(config.gen_prefix.clone()),
            target_delimiter: fs
                .target_delimiter
                .clone()
                .unwrap_or(config.target_delimiter.clone()),
            fewshot_delimiter: fs
                .fewshot_delimiter
                .clone()
                .unwrap_or(config.fewshot_delimiter.clone()),
        };
        let decontamination = config
            .doc_to_decontamination_query
            .as_ref()
            .map(|q| Value::String(q.clone()));
        let decontamination = field("doc_to_decontamination_query", &decontamination)?;
        let metrics = match &config.metric_list {
            None => Metric::defaults(config.output_type)
                .into_iter()
                .map(|metric| MetricSpec {
                    metric,
                    aggregation: metric.default_aggregation(),
                    higher_is_better: metric.higher_is_better(),
                    options: MetricConfig::named(&metric.name()),
                })
                .collect(),
            Some(list) => {
                let mut specs = Vec::new();
                for m in list {
                    for metric in Metric::from_entry(m, config.output_type)? {
                        specs.push(MetricSpec {
                            metric,
                            aggregation: match &m.aggregation {
                                Some(a) => Aggregation::parse(a)?,
                                None => metric.default_aggregation(),
                            },
                            higher_is_better: m
                                .higher_is_better
                                .unwrap_or(metric.higher_is_better()),
                            options: m.clone(),
                        });
                    }
                }
                specs
            }
        };
        let filters = config.filter_list.clone().unwrap_or_else(|| {
            vec![FilterPipeline {
                name: "none".into(),
                filter: vec![FilterStep::TakeFirst],
            }]
        });
        let num_fewshot = match (config.num_fewshot, num_fewshot) {
            (Some(0), _) => 0,
            (_, Some(n)) => n,
            (Some(n), None) => n,
            (None, None) => 0,
        };
        let mut task = Task {
            pool_is_eval_split: fewshot_split == config.test_split,
            first_n: fs.sampler.as_deref() == Some("first_n"),
            config,
            docs,
            num_fewshot,
            metrics,
            filters,
            pool,
            templates,
            decontamination,
            main,
            fewshot,
            multiple_input: false,
            multiple_target: false,
            rng: PyRandom::new(FEWSHOT_SEED),
        };
        // As the harness, the first document decides whether questions are context indices
        // and targets lists.
        let first = task.docs[0].clone();
        task.multiple_input = task.main.choice.is_some()
            && matches!(task.question(&first, false)?, Question::Index(_));
        task.multiple_target = matches!(task.target(&first, false)?, Value::Array(_));
        // Drawing from the evaluated split leaves out the document itself.
        let needed = task.num_fewshot + usize::from(task.pool_is_eval_split);
        if task.num_fewshot > 0 && task.pool.len() < needed {
            bail!(
                "{} few-shot examples asked for but only {} documents to draw from",
                task.num_fewshot,
                task.pool.len()
            );
        }
        Ok(task)
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.config.task
    }

    /// Whether the task runs model-written programs (it is scored by pass@k).
    pub fn runs_code(&self) -> bool {
        self.metrics
            .iter()
            .any(|m| matches!(m.metric, Metric::PassAtK(_)))
    }

    /// What the model is asked.
    pub fn output_type(&self) -> OutputType {
        self.config.output_type
    }

    fn fields(&self, fewshot: bool) -> &Fields {
        if fewshot {
            &self.fewshot
        } else {
            &self.main
        }
    }

    /// `doc_to_text`.
    pub fn question(&self, doc: &Doc, fewshot: bool) -> Result<Question> {
        let f = self.fields(fewshot);
        let Some(field) = &f.text else {
            bail!("doc_to_text is required");
        };
        let value = self.templates.resolve(field, doc)?;
        Ok(match (field, value) {
            (Field::Template(_), Value::String(s)) if is_digits(&s) && f.choice.is_some() => {
                Question::Index(s.parse().context("doc_to_text index")?)
            }
            (_, Value::String(s)) => Question::Text(s),
            (_, Value::Number(n)) if n.as_u64().is_some() => {
                Question::Index(n.as_u64().unwrap() as usize)
            }
            (_, other) => bail!("doc_to_text gave {other}, not text or an index"),
        })
    }

    /// `doc_to_target`: an index, a string or a list.
    pub fn target(&self, doc: &Doc, fewshot: bool) -> Result<Value> {
        let f = self.fields(fewshot);
        let Some(field) = &f.target else {
            bail!("doc_to_target is required");
        };
        let value = self.templates.resolve(field, doc)?;
        let Field::Template(_) = field else {
            return Ok(value);
        };
        let text = value.as_str().expect("templates render text").to_string();
        Ok(if is_digits(&text) && f.choice.is_some() {
            Value::from(text.parse::<u64>().context("doc_to_target index")?)
        } else if text.len() >= 2 && text.starts_with('[') && text.ends_with(']') {
            literal::parse(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        })
    }

    /// `doc_to_choice`: the choices' texts.
    pub fn choices(&self, doc: &Doc, fewshot: bool) -> Result<Vec<String>> {
        let Some(field) = &self.fields(fewshot).choice else {
            bail!("doc_to_choice is required");
        };
        let value = match (field, self.templates.resolve(field, doc)?) {
            (Field::Template(_), Value::String(s)) => {
                literal::parse(&s).map_err(|e| anyhow!("doc_to_choice: {e}"))?
            }
            (Field::Literal(_), Value::Object(m)) => Value::Array(m.into_values().collect()),
            (_, v) => v,
        };
        let Value::Array(items) = value else {
            bail!("doc_to_choice gave {value}, not a list");
        };
        items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => bail!("doc_to_choice: choice {other} is not text"),
            })
            .collect()
    }

    /// A field the harness reads per document (`description`, `gen_prefix`): a column of the
    /// document or a template.
    fn resolve_text(&self, doc: &Doc, field: &str) -> Result<String> {
        match doc.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => self.templates.render_str(field, doc),
        }
    }

    /// The few-shot examples for the next document, drawn as the harness's samplers draw them
    /// (the draws of one task run follow each other from one seeded generator).
    fn draw_examples(&mut self, doc: &Doc) -> Vec<Doc> {
        let n = self.num_fewshot;
        let eval_doc = self.pool_is_eval_split.then_some(doc);
        if self.first_n {
            return self
                .pool
                .iter()
                .filter(|d| eval_doc != Some(*d))
                .take(n)
                .cloned()
                .collect();
        }
        let draw = match eval_doc {
            None => self.rng.sample(self.pool.len(), n),
            Some(_) => self.rng.sample(self.pool.len(), n + 1),
        };
        let mut picked: Vec<Doc> = draw
            .into_iter()
            .map(|i| self.pool[i].clone())
            .filter(|d| eval_doc != Some(d))
            .take(n)
            .collect();
        if picked.len() < n {
            let pool: Vec<&Doc> = self.pool.iter().filter(|d| eval_doc != Some(*d)).collect();
            picked = self
                .rng
                .sample(pool.len(), n)
                .into_iter()
                .map(|i| pool[i].clone())
                .collect();
        }
        picked
    }

    /// The prompt(s) of a document: few-shot examples then the question (one prompt per
    /// choice when questions are context indices). Draws few-shot examples, so documents must
    /// be taken in order.
    pub fn contexts(&mut self, doc: &Doc) -> Result<Vec<String>> {
        let mut text = String::new();
        if !self.config.description.is_empty() {
            text.push_str(&self.resolve_text(doc, &self.config.description.clone())?);
        }
        if self.num_fewshot > 0 {
            for example in self.draw_examples(doc) {
                let q = self.question(&example, true)?;
                let c = self
                    .fewshot
                    .choice
                    .as_ref()
                    .map(|_| self.choices(&example, true))
                    .transpose()?;
                let a = self.target(&example, true)?;
                let prefix = match &self.fewshot.gen_prefix {
                    Some(p) => Some(self.resolve_text(&example, p)?),
                    None => None,
                };
                let q = match (q, self.multiple_input) {
                    (Question::Index(i), true) => choice_at(c.as_deref(), i)?.to_string(),
                    (Question::Text(t), _) => t,
                    (Question::Index(i), false) => bail!("doc_to_text gave index {i}, not text"),
                };
                let c = if self.multiple_input { None } else { c };
                text.push_str(&qa_turn(
                    &q,
                    c.as_deref(),
                    Some(&a),
                    prefix.as_deref(),
                    &self.fewshot.target_delimiter,
                    &self.fewshot.fewshot_delimiter,
                )?);
            }
        }
        let prefix = match &self.main.gen_prefix {
            Some(p) => Some(self.resolve_text(doc, p)?),
            None => None,
        };
        if self.multiple_input {
            return self
                .choices(doc, false)?
                .iter()
                .map(|c| Ok(text.clone() + &qa_turn(c, None, None, prefix.as_deref(), "", "")?))
                .collect();
        }
        let Question::Text(q) = self.question(doc, false)? else {
            bail!("doc_to_text gave an index for a task whose first document has text");
        };
        let delimiter = self.main.target_delimiter.clone();
        text.push_str(&qa_turn(&q, None, None, prefix.as_deref(), &delimiter, "")?);
        Ok(vec![text])
    }

    /// The requests of a document given its prompt(s) (`construct_requests`).
    pub fn requests(&self, doc: &Doc, contexts: &[String]) -> Result<Vec<Request>> {
        let delimiter = &self.main.target_delimiter;
        let single = || contexts[0].clone();
        Ok(match self.config.output_type {
            OutputType::Loglikelihood => vec![Request::Loglikelihood {
                context: single(),
                continuation: text_of(&self.target(doc, false)?)?,
            }],
            OutputType::LoglikelihoodRolling => {
                vec![Request::Rolling(text_of(&self.target(doc, false)?)?)]
            }
            OutputType::MultipleChoice if self.multiple_input => {
                let cont = text_of(&self.target(doc, false)?)?;
                contexts
                    .iter()
                    .map(|c| Request::Loglikelihood {
                        context: c.clone(),
                        continuation: format!("{delimiter}{cont}"),
                    })
                    .collect()
            }
            OutputType::MultipleChoice => self
                .choices(doc, false)?
                .into_iter()
                .map(|c| Request::Loglikelihood {
                    context: single(),
                    continuation: format!("{delimiter}{c}"),
                })
                .collect(),
            OutputType::GenerateUntil => {
                let kwargs = self.config.generation_kwargs.as_ref();
                let until = kwargs
                    .and_then(|k| k.until.as_ref())
                    .map(|u| u.to_vec())
                    .unwrap_or_else(|| vec![self.config.fewshot_delimiter.clone()]);
                let max_gen_toks = kwargs
                    .and_then(|k| k.max_gen_toks)
                    .unwrap_or(DEFAULT_MAX_GEN_TOKS);
                vec![Request::Generate {
                    context: single(),
                    until,
                    max_gen_toks,
                    sampling: kwargs.and_then(|k| k.sampling()),
                    repeats: self.config.repeats,
                }]
            }
        })
    }

    /// The index of the right answer among the choices (`-100`-style misses as `None`), or the
    /// indices when targets are lists.
    pub fn gold_indices(&self, doc: &Doc, choices: &[String]) -> Result<Vec<Option<usize>>> {
        let gold = if self.multiple_input {
            match self.question(doc, false)? {
                Question::Index(i) => Value::from(i),
                Question::Text(t) => Value::String(t),
            }
        } else {
            self.target(doc, false)?
        };
        let one = |g: &Value| -> Option<usize> {
            match g {
                Value::Number(n) => n
                    .as_u64()
                    .map(|i| i as usize)
                    .filter(|&i| i < choices.len()),
                Value::String(s) => choices.iter().position(|c| c == s),
                _ => None,
            }
        };
        Ok(match &gold {
            Value::Array(items) => items.iter().map(one).collect(),
            g => vec![one(g)],
        })
    }

    /// The text of a document that contamination is checked on: its
    /// `doc_to_decontamination_query`, else the question followed by the right answer.
    pub fn decontamination_text(&self, doc: &Doc) -> Result<String> {
        if let Some(field) = &self.decontamination {
            return Ok(python_str(&self.templates.resolve(field, doc)?));
        }
        let choices = match self.main.choice {
            Some(_) => self.choices(doc, false)?,
            None => Vec::new(),
        };
        let question = match self.question(doc, false)? {
            Question::Text(t) => t,
            Question::Index(i) => choice_at(Some(&choices), i)?.to_string(),
        };
        let answer = match self.config.output_type {
            OutputType::MultipleChoice if !self.multiple_input => {
                match self.gold_indices(doc, &choices)?.first() {
                    Some(Some(i)) => choices[*i].clone(),
                    _ => String::new(),
                }
            }
            OutputType::GenerateUntil => self.gold_texts(doc)?.swap_remove(0),
            _ => python_str(&self.target(doc, false)?),
        };
        Ok(format!("{question}{}{answer}", self.main.target_delimiter))
    }

    /// The target text of a generation task (a choice's text when the task has choices).
    pub fn gold_texts(&self, doc: &Doc) -> Result<Vec<String>> {
        let target = self.target(doc, false)?;
        if self.main.choice.is_some() {
            let choices = self.choices(doc, false)?;
            let i = target
                .as_u64()
                .ok_or_else(|| anyhow!("doc_to_target must be an index when choices are given"))?;
            return Ok(vec![choice_at(Some(&choices), i as usize)?.to_string()]);
        }
        Ok(match target {
            Value::Array(items) => items.iter().map(python_str).collect(),
            other => vec![python_str(&other)],
        })
    }
}

/// Python's `str.isdigit` for the ASCII digits templates render.
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn choice_at(choices: Option<&[String]>, i: usize) -> Result<&str> {
    choices
        .and_then(|c| c.get(i))
        .map(String::as_str)
        .ok_or_else(|| anyhow!("index {i} is not one of the choices"))
}

/// A target as text (`str(x)` in Python for numbers).
fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn text_of(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => bail!("the target {other} is not text"),
    }
}

/// One question-and-answer turn as plain text (`build_qa_turn` rendered with `to_text`).
fn qa_turn(
    q: &str,
    choices: Option<&[String]>,
    answer: Option<&Value>,
    gen_prefix: Option<&str>,
    target_delimiter: &str,
    fewshot_delimiter: &str,
) -> Result<String> {
    let has_answer = answer.is_some_and(|a| !a.is_null() && a.as_str() != Some(""));
    let gen_prefix = gen_prefix.filter(|p| !p.is_empty());
    let mut out = q.to_string();
    if (has_answer && gen_prefix.is_none()) || gen_prefix.is_some_and(|p| requires_delimiter(q, p))
    {
        out.push_str(target_delimiter);
    }
    if has_answer {
        let answer = answer.expect("has_answer");
        let text = match (choices, answer) {
            (Some(c), Value::Number(n)) if !c.is_empty() => {
                choice_at(Some(c), n.as_u64().unwrap_or(u64::MAX) as usize)?.to_string()
            }
            (_, Value::Array(items)) => text_of(items.first().unwrap_or(&Value::Null))?,
            (_, a) => text_of(a)
                .map_err(|_| anyhow!("the answer {a} is not text (give doc_to_choice)"))?,
        };
        out.push_str(&maybe_delimit(gen_prefix, &text));
        out.push_str(fewshot_delimiter);
    } else if let Some(p) = gen_prefix {
        out.push_str(p);
    }
    Ok(out)
}

/// Whether neither side has whitespace where they meet (`requires_delimiter`).
fn requires_delimiter(prefix: &str, suffix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.ends_with(char::is_whitespace)
        && !suffix.starts_with(char::is_whitespace)
}

/// `prefix + " " + suffix`, without the space when either side has whitespace there.
fn maybe_delimit(prefix: Option<&str>, suffix: &str) -> String {
    match prefix {
        None | Some("") => suffix.to_string(),
        Some(p) if suffix.is_empty() => p.to_string(),
        Some(p) if requires_delimiter(p, suffix) => format!("{p} {suffix}"),
        Some(p) => format!("{p}{suffix}"),
    }
}
