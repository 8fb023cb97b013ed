//! Running one task: prompts and requests for each document, the model's answers, answer
//! extraction (filters), per-document metrics (`process_results`) and their aggregation.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use herd_infer::SamplingConfig;
use serde_json::{json, Map, Value};

use crate::config::{FilterPipeline, FilterStep, OutputType};
use crate::data::Doc;
use crate::metrics::{argmax, count_words, exact_match, Metric};
use crate::model::{EvalModel, Generation, Loglikelihood};
use crate::sandbox::{pass_at_k, Outcome, Sandbox};
use crate::task::{Request, Task};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Evaluate only the first `limit` documents.
    pub limit: Option<usize>,
    /// Resamples for bootstrapped standard errors (the harness's default is 100,000).
    pub bootstrap_iters: usize,
    /// Seed of sampled generations (each document and repeat draws from its own stream).
    pub seed: u64,
    /// Where model-written programs run (tasks with `pass_at_k` need it).
    pub sandbox: Option<Arc<Sandbox>>,
    /// Programs run at once.
    pub code_workers: usize,
}

/// One metric of a task's results.
#[derive(Debug, Clone)]
pub struct MetricResult {
    /// The metric.
    pub metric: Metric,
    /// The filter pipeline it was computed after (`none` when there is none).
    pub filter: String,
    /// The aggregated value.
    pub value: f64,
    /// Its standard error, `None` where the harness reports "N/A".
    pub stderr: Option<f64>,
    /// Whether larger is better.
    pub higher_is_better: bool,
}

/// What one document gave.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its index in the evaluated split.
    pub doc_id: usize,
    /// The document.
    pub doc: Doc,
    /// What it asked.
    pub requests: Vec<Request>,
    /// The model's raw answers: `[logprob, is_greedy]` pairs, a log-likelihood, or a text.
    pub responses: Vec<Value>,
    /// Per filter pipeline: the filtered answers (one per request).
    pub filtered: Vec<(String, Vec<Value>)>,
    /// Per filter pipeline and metric: the document's value and weight.
    pub scores: Vec<(String, Metric, f64, f64)>,
    /// The target as the harness logs it.
    pub target: Value,
    /// Per filter pipeline that ran code: how each program ended.
    pub code_results: CodeResults,
}

/// A document's programs per filter pipeline: the pipeline's name and how each program ended.
pub type CodeResults = Vec<(String, Vec<Outcome>)>;

/// A task's outcome.
pub struct TaskResult {
    /// The metrics, in the task's order, per filter.
    pub metrics: Vec<MetricResult>,
    /// Every document's sample.
    pub samples: Vec<Sample>,
    /// Documents in the split.
    pub original: usize,
    /// Documents evaluated.
    pub effective: usize,
}

/// Evaluates `task` with `lm`; `progress(done, total)` is told about documents as they finish.
pub fn evaluate(
    task: &mut Task,
    lm: &EvalModel,
    options: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TaskResult> {
    let original = task.docs.len();
    let docs: Vec<Doc> = task.docs[..options.limit.unwrap_or(original).min(original)].to_vec();
    let mut requests = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let contexts = task
            .contexts(doc)
            .map_err(|e| anyhow!("document {i}: {e:#}"))?;
        requests.push(
            task.requests(doc, &contexts)
                .map_err(|e| anyhow!("document {i}: {e:#}"))?,
        );
    }
    let responses = answer(lm, &requests, options.seed, progress)?;
    let code = run_programs(task, &docs, &requests, &responses, options)?;
    let mut samples = Vec::with_capacity(docs.len());
    for (doc_id, ((doc, reqs), resps)) in docs.into_iter().zip(requests).zip(responses).enumerate()
    {
        let outcomes = code.get(doc_id).cloned().unwrap_or_default();
        let sample = score_document(task, doc_id, doc, reqs, resps, outcomes)
            .map_err(|e| anyhow!("document {doc_id}: {e:#}"))?;
        samples.push(sample);
    }
    let mut metrics = Vec::new();
    for pipeline in &task.filters {
        for spec in &task.metrics {
            let items: Vec<(f64, f64)> = samples
                .iter()
                .flat_map(|s| {
                    s.scores
                        .iter()
                        .filter(|(f, m, _, _)| f == &pipeline.name && *m == spec.metric)
                        .map(|(_, _, v, w)| (*v, *w))
                })
                .collect();
            if items.is_empty() {
                continue;
            }
            metrics.push(MetricResult {
                metric: spec.metric,
                filter: pipeline.name.clone(),
                value: spec.aggregation.apply(&items),
                stderr: spec.aggregation.stderr(&items, options.bootstrap_iters),
                higher_is_better: spec.higher_is_better,
            });
        }
    }
    let effective = samples.len();
    Ok(TaskResult {
        metrics,
        samples,
        original,
        effective,
    })
}

/// The model's answers to every document's requests, documents in order.
fn answer(
    lm: &EvalModel,
    requests: &[Vec<Request>],
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<Value>>> {
    let total = requests.len();
    // Scored requests of all documents go to the model together (it batches them); each
    // document's answers are then cut out of the flat list.
    let mut pairs = Vec::new();
    let mut owners = Vec::new();
    let mut generations = Vec::new();
    for (d, reqs) in requests.iter().enumerate() {
        for r in reqs {
            match r {
                Request::Loglikelihood {
                    context,
                    continuation,
                } => {
                    pairs.push(lm.encode_pair(context, continuation)?);
                    owners.push((d, false));
                }
                Request::Rolling(text) => {
                    for w in lm.rolling_windows(text)? {
                        pairs.push(w);
                        owners.push((d, true));
                    }
                }
                Request::Generate { .. } => generations.push(d),
            }
        }
    }
    let mut answers: Vec<Vec<Value>> = vec![Vec::new(); total];
    if !pairs.is_empty() {
        let mut requests_left: Vec<usize> = vec![0; total];
        for (d, _) in &owners {
            requests_left[*d] += 1;
        }
        let mut done_requests = 0;
        let mut done_docs = 0;
        let scores = lm.loglikelihood_tokens(&pairs, |n| {
            for &(d, _) in &owners[done_requests..done_requests + n] {
                requests_left[d] -= 1;
                if requests_left[d] == 0 {
                    done_docs += 1;
                }
            }
            done_requests += n;
            progress(done_docs, total);
        })?;
        let mut rolling: Vec<Option<f64>> = vec![None; total];
        for (&(d, is_rolling), Loglikelihood { logprob, is_greedy }) in owners.iter().zip(scores) {
            if is_rolling {
                *rolling[d].get_or_insert(0.0) += logprob;
            } else {
                answers[d].push(json!([logprob, is_greedy]));
            }
        }
        for (d, sum) in rolling.into_iter().enumerate() {
            if let Some(sum) = sum {
                answers[d].push(json!(sum));
            }
        }
    }
    if !generations.is_empty() {
        // The harness adds the end-of-text token's text to every request's stop strings.
        let eos: Option<String> = lm
            .tokenizer()
            .stop_ids()
            .first()
            .map(|&id| lm.tokenizer().token_text(Some(id)));
        // One generation per document and repeat; greedy repeats are all the same, so one
        // is generated and copied.
        let mut stops = Vec::with_capacity(generations.len());
        for &d in &generations {
            for r in &requests[d] {
                if let Request::Generate {
                    context,
                    until,
                    max_gen_toks,
                    sampling,
                    repeats,
                } = r
                {
                    let mut until = until.clone();
                    if let Some(e) = eos.as_ref().filter(|e| !until.contains(e)) {
                        until.push(e.clone());
                    }
                    let (runs, copies) = match sampling {
                        Some(_) => (*repeats, 1),
                        None => (1, *repeats),
                    };
                    for repeat in 0..runs {
                        let config = match sampling {
                            None => SamplingConfig::default(),
                            Some(s) => SamplingConfig {
                                temperature: s.temperature as f32,
                                top_p: s.top_p as f32,
                                top_k: s.top_k,
                                seed: generation_seed(seed, d, repeat),
                                ..SamplingConfig::default()
                            },
                        };
                        stops.push((
                            d,
                            context.as_str(),
                            until.clone(),
                            *max_gen_toks,
                            config,
                            copies,
                        ));
                    }
                }
            }
        }
        let batch: Vec<Generation> = stops
            .iter()
            .map(
                |(_, context, until, max_gen_toks, sampling, _)| Generation {
                    context,
                    until,
                    max_gen_toks: *max_gen_toks,
                    sampling: sampling.clone(),
                },
            )
            .collect();
        let mut docs_left: Vec<usize> = vec![0; total];
        for (d, ..) in &stops {
            docs_left[*d] += 1;
        }
        let mut done = 0;
        let texts = lm.generate_until(&batch, |finished| {
            let d = stops[finished].0;
            docs_left[d] -= 1;
            if docs_left[d] == 0 {
                done += 1;
                progress(done, total);
            }
        })?;
        for ((d, .., copies), text) in stops.iter().zip(texts) {
            for _ in 0..*copies {
                answers[*d].push(Value::String(text.clone()));
            }
        }
    }
    Ok(answers)
}

/// The seed of one sampled generation: its own stream per run seed, document and repeat.
fn generation_seed(seed: u64, doc: usize, repeat: usize) -> u64 {
    let mut state = seed ^ (doc as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (repeat as u64) << 48;
    herd_util::seeded::splitmix64(&mut state)
}

/// The prompt a document's generations continued.
fn generation_context(requests: &[Request]) -> &str {
    requests
        .iter()
        .find_map(|r| match r {
            Request::Generate { context, .. } => Some(context.as_str()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The texts a document generated.
fn generated_texts(responses: &[Value]) -> Vec<String> {
    responses
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect()
}

/// For tasks scored by pass@k: every program (a filtered generation followed by the document's
/// tests, as HF `code_eval` joins them) run in the sandbox; per document, per filter pipeline,
/// how each program ended. Empty when the task runs no code.
fn run_programs(
    task: &Task,
    docs: &[Doc],
    requests: &[Vec<Request>],
    responses: &[Vec<Value>],
    options: &EvalOptions,
) -> Result<Vec<CodeResults>> {
    if !task.runs_code() {
        return Ok(Vec::new());
    }
    let Some(sandbox) = &options.sandbox else {
        bail!(
            "task {} runs model-written code and needs a sandbox",
            task.name()
        );
    };
    let mut programs = Vec::new();
    let mut owners = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let tests = task.gold_texts(doc)?.swap_remove(0);
        let generated = generated_texts(&responses[d]);
        for (p, pipeline) in task.filters.iter().enumerate() {
            let filtered = apply_filters(pipeline, generation_context(&requests[d]), &generated)
                .map_err(|e| anyhow!("document {d}: {e:#}"))?;
            for program in filtered.answers {
                programs.push(format!("{program}\n{tests}"));
                owners.push((d, p));
            }
        }
    }
    let outcomes = sandbox.run_all(&programs, options.code_workers)?;
    let mut per_doc: Vec<CodeResults> = docs
        .iter()
        .map(|_| {
            task.filters
                .iter()
                .map(|f| (f.name.clone(), Vec::new()))
                .collect()
        })
        .collect();
    for ((d, p), outcome) in owners.into_iter().zip(outcomes) {
        per_doc[d][p].1.push(outcome);
    }
    Ok(per_doc)
}

/// `process_results` for one document, after the task's filters; `code_results` are its
/// programs' outcomes per filter pipeline (tasks scored by pass@k).
fn score_document(
    task: &Task,
    doc_id: usize,
    doc: Doc,
    requests: Vec<Request>,
    responses: Vec<Value>,
    code_results: CodeResults,
) -> Result<Sample> {
    let mut scores = Vec::new();
    let mut filtered: Vec<(String, Vec<Value>)> = Vec::new();
    let target;
    match task.output_type() {
        OutputType::MultipleChoice => {
            let choices = task.choices(&doc, false)?;
            let lls: Vec<f64> = responses
                .iter()
                .map(|r| r[0].as_f64().unwrap_or(f64::NAN))
                .collect();
            let greedy: Vec<bool> = responses
                .iter()
                .map(|r| r[1].as_bool() == Some(true))
                .collect();
            if lls.len() != choices.len() {
                bail!("{} answers for {} choices", lls.len(), choices.len());
            }
            let by_chars: Vec<f64> = lls
                .iter()
                .zip(&choices)
                .map(|(l, c)| l / c.chars().count() as f64)
                .collect();
            let by_bytes: Vec<f64> = lls
                .iter()
                .zip(&choices)
                .map(|(l, c)| l / c.len() as f64)
                .collect();
            let gold = task.gold_indices(&doc, &choices)?;
            let hit = |pred: usize| gold.contains(&Some(pred));
            let bool_score = |b: bool| if b { 1.0 } else { 0.0 };
            let exact = gold.iter().any(|g| g.is_some_and(|g| greedy[g]));
            for spec in &task.metrics {
                let v = match spec.metric {
                    Metric::Acc => bool_score(hit(argmax(&lls))),
                    Metric::AccNorm => bool_score(hit(argmax(&by_chars))),
                    Metric::AccBytes => bool_score(hit(argmax(&by_bytes))),
                    Metric::ExactMatch => bool_score(exact),
                    other => bail!("{} does not apply to multiple choice", other.name()),
                };
                scores.push(("none".to_string(), spec.metric, v, 1.0));
            }
            target = match task.target(&doc, false)? {
                Value::Number(n) => Value::String(n.to_string()),
                v => v,
            };
            filtered.push(("none".to_string(), responses.clone()));
        }
        OutputType::Loglikelihood => {
            let ll = responses[0][0].as_f64().unwrap_or(f64::NAN);
            let greedy = responses[0][1].as_bool() == Some(true);
            for spec in &task.metrics {
                let v = match spec.metric {
                    Metric::Perplexity => ll,
                    Metric::Acc => greedy as u8 as f64,
                    other => bail!("{} does not apply to loglikelihood", other.name()),
                };
                scores.push(("none".to_string(), spec.metric, v, 1.0));
            }
            target = task.target(&doc, false)?;
            filtered.push(("none".to_string(), vec![responses[0].clone()]));
        }
        OutputType::LoglikelihoodRolling => {
            let ll = responses[0].as_f64().unwrap_or(f64::NAN);
            let text = match task.target(&doc, false)? {
                Value::String(s) => s,
                other => bail!("the rolling target {other} is not text"),
            };
            for spec in &task.metrics {
                let weight = match spec.metric {
                    Metric::WordPerplexity => count_words(&text),
                    Metric::BytePerplexity | Metric::BitsPerByte => text.len(),
                    other => bail!("{} does not apply to loglikelihood_rolling", other.name()),
                };
                scores.push(("none".to_string(), spec.metric, ll, weight as f64));
            }
            target = Value::String(text);
            filtered.push(("none".to_string(), vec![responses[0].clone()]));
        }
        OutputType::GenerateUntil => {
            let generated = generated_texts(&responses);
            let golds = task.gold_texts(&doc)?;
            for (p, pipeline) in task.filters.iter().enumerate() {
                let answers = apply_filters(pipeline, generation_context(&requests), &generated)?;
                for spec in &task.metrics {
                    let v = match spec.metric {
                        Metric::ExactMatch => {
                            let [answer] = answers.answers.as_slice() else {
                                bail!(
                                    "exact_match scores one answer but filter `{}` leaves {}: \
                                     end it with take_first",
                                    pipeline.name,
                                    answers.answers.len()
                                );
                            };
                            let mut hits = 0;
                            for g in &golds {
                                hits += exact_match(answer, g, &spec.options)? as usize;
                            }
                            if hits > 0 {
                                1.0
                            } else {
                                0.0
                            }
                        }
                        Metric::PassAtK(k) => {
                            let outcomes = &code_results[p].1;
                            let passed = outcomes.iter().filter(|o| **o == Outcome::Passed);
                            pass_at_k(outcomes.len(), passed.count(), k)
                        }
                        other => bail!("{} does not apply to generate_until", other.name()),
                    };
                    scores.push((pipeline.name.clone(), spec.metric, v, 1.0));
                }
                let logged = if answers.reduced {
                    Value::String(answers.answers[0].clone())
                } else {
                    json!(answers.answers)
                };
                filtered.push((pipeline.name.clone(), vec![logged]));
            }
            target = if task.multiple_target {
                json!(golds)
            } else {
                Value::String(golds[0].clone())
            };
        }
    }
    Ok(Sample {
        doc_id,
        doc,
        requests,
        responses,
        filtered,
        scores,
        target,
        code_results,
    })
}

/// A document's generations after a filter pipeline.
pub struct Filtered {
    /// One answer per generation, or the first alone after `take_first`.
    pub answers: Vec<String>,
    /// Whether `take_first` reduced the list to one answer (logged as a string then).
    pub reduced: bool,
}

/// A document's generations through a filter pipeline; each step applies to every generation,
/// as the harness's filters do, and `take_first` keeps the first. `context` is the prompt the
/// generations continued.
pub fn apply_filters(
    pipeline: &FilterPipeline,
    context: &str,
    generated: &[String],
) -> Result<Filtered> {
    let mut answers = generated.to_vec();
    let mut reduced = false;
    for step in &pipeline.filter {
        if let FilterStep::TakeFirst = step {
            answers.truncate(1);
            reduced = true;
            continue;
        }
        for text in &mut answers {
            *text = match step {
                FilterStep::TakeFirst => unreachable!("handled above"),
                FilterStep::Lowercase => text.to_lowercase(),
                FilterStep::Uppercase => text.to_uppercase(),
                FilterStep::RemoveWhitespace => text.trim().to_string(),
                FilterStep::BuildPredictions => format!("{context}{text}"),
                FilterStep::Regex {
                    regex_pattern,
                    group_select,
                    fallback,
                } => regex_filter(regex_pattern, *group_select, fallback, text).map_err(|e| {
                    anyhow!("filter `{}`: regex `{regex_pattern}`: {e}", pipeline.name)
                })?,
            };
        }
    }
    Ok(Filtered { answers, reduced })
}

/// The harness's regex filter: `re.findall`, match `group_select` (negative from the end); of a
/// match with several groups the first non-empty group; stripped; `fallback` when nothing
/// matches.
fn regex_filter(pattern: &str, select: i64, fallback: &str, text: &str) -> Result<String> {
    let re = regex::Regex::new(pattern)?;
    let found: Vec<String> = re
        .captures_iter(text)
        .map(|c| match c.len() {
            1 => c[0].to_string(),
            2 => c.get(1).map_or("", |m| m.as_str()).to_string(),
            _ => (1..c.len())
                .filter_map(|i| c.get(i).map(|m| m.as_str()))
                .find(|s| !s.is_empty())
                .unwrap_or(fallback)
                .to_string(),
        })
        .collect();
    if found.is_empty() {
        return Ok(fallback.to_string());
    }
    let index = if select < 0 {
        found.len() as i64 + select
    } else {
        select
    };
    let Some(m) = usize::try_from(index).ok().and_then(|i| found.get(i)) else {
        bail!("group_select {select} but only {} matches", found.len());
    };
    Ok(m.trim().to_string())
}

/// A document's JSON lines as the harness logs them (`--log_samples`): one per filter
/// pipeline, with the requests' arguments, the raw and filtered answers, and the pipeline's
/// metric values.
pub fn sample_lines(sample: &Sample) -> Vec<Value> {
    let arguments: Map<String, Value> = sample
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let args = match r {
                Request::Loglikelihood {
                    context,
                    continuation,
                } => json!({"arg_0": context, "arg_1": continuation}),
                Request::Rolling(text) => json!({"arg_0": text}),
                Request::Generate {
                    context,
                    until,
                    max_gen_toks,
                    sampling,
                    ..
                } => {
                    let mut kwargs = json!({"until": until, "max_gen_toks": max_gen_toks});
                    if let Some(s) = sampling {
                        kwargs["do_sample"] = json!(true);
                        kwargs["temperature"] = json!(s.temperature);
                        kwargs["top_p"] = json!(s.top_p);
                    }
                    json!({"arg_0": context, "arg_1": kwargs})
                }
            };
            (format!("gen_args_{i}"), args)
        })
        .collect();
    // A generation request's repeats answer it together; a scoring request has one answer.
    let generates = matches!(sample.requests.as_slice(), [Request::Generate { .. }]);
    let resps = if generates {
        json!([sample.responses])
    } else {
        json!(sample
            .responses
            .iter()
            .map(|r| json!([r]))
            .collect::<Vec<_>>())
    };
    sample
        .filtered
        .iter()
        .map(|(filter, filtered)| {
            let mut line = json!({
                "doc_id": sample.doc_id,
                "doc": sample.doc,
                "target": sample.target,
                "arguments": arguments,
                "resps": resps,
                "filtered_resps": filtered,
                "filter": filter,
            });
            let scores: Vec<_> = sample.scores.iter().filter(|s| &s.0 == filter).collect();
            line["metrics"] = json!(scores.iter().map(|s| s.1.name()).collect::<Vec<_>>());
            if let Some((_, outcomes)) = sample.code_results.iter().find(|c| &c.0 == filter) {
                line["code_results"] =
                    json!(outcomes.iter().map(Outcome::describe).collect::<Vec<_>>());
            }
            for (_, metric, value, weight) in scores {
                line[metric.name().as_ref()] = match metric {
                    Metric::WordPerplexity | Metric::BytePerplexity | Metric::BitsPerByte => {
                        json!([value, weight])
                    }
                    _ => json!(value),
                };
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::regex_filter;

    const GSM: &str = r"#### (\-?[0-9\.\,]+)";
    const FLEX: &str = r"(-?[$0-9.,]{2,})|(-?[0-9]+)";

    #[test]
    fn regex_filter_as_the_harness() {
        assert_eq!(
            regex_filter(GSM, 0, "[invalid]", "so #### 42\n").unwrap(),
            "42"
        );
        assert_eq!(
            regex_filter(GSM, 0, "[invalid]", "no answer").unwrap(),
            "[invalid]"
        );
        // Several groups: the first non-empty one of the selected (last) match.
        assert_eq!(
            regex_filter(FLEX, -1, "[invalid]", "3 apples, then $1,200.").unwrap(),
            "$1,200."
        );
        assert_eq!(regex_filter(FLEX, -1, "[invalid]", "it is 7").unwrap(), "7");
        let strict = r"The answer is (\-?[0-9\.\,]+).";
        assert_eq!(
            regex_filter(strict, 0, "[invalid]", "The answer is 18.").unwrap(),
            "18"
        );
    }
}

#[cfg(test)]
mod code_tests {
    use std::path::Path;
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::builtin::task_config;
    use crate::sandbox::{Sandbox, SandboxOptions};

    /// HumanEval's programs as the built-in task builds them (prompt + completion, then the
    /// tests and `check(entry_point)`), from the given completions, scored in the sandbox.
    fn score_completions(data: &Path, completion: impl Fn(&Doc) -> Vec<String>) -> Vec<Sample> {
        let mut task = Task::load(task_config("humaneval_20").unwrap(), data, None).unwrap();
        let options = EvalOptions {
            limit: None,
            bootstrap_iters: 0,
            seed: 0,
            sandbox: Some(Arc::new(Sandbox::new(SandboxOptions::default()).unwrap())),
            code_workers: 2,
        };
        let docs = task.docs.clone();
        let mut requests = Vec::new();
        for doc in &docs {
            let contexts = task.contexts(doc).unwrap();
            requests.push(task.requests(doc, &contexts).unwrap());
        }
        let responses: Vec<Vec<Value>> = docs
            .iter()
            .map(|d| completion(d).into_iter().map(Value::String).collect())
            .collect();
        let code = run_programs(&task, &docs, &requests, &responses, &options).unwrap();
        docs.into_iter()
            .zip(requests)
            .zip(responses)
            .zip(code)
            .enumerate()
            .map(|(i, (((doc, reqs), resps), code))| {
                score_document(&task, i, doc, reqs, resps, code).unwrap()
            })
            .collect()
    }

    fn pass_at(sample: &Sample, k: usize) -> f64 {
        sample
            .scores
            .iter()
            .find(|s| s.1 == Metric::PassAtK(k))
            .unwrap()
            .2
    }

    #[test]
    fn canonical_solutions_pass_and_wrong_ones_fail() {
        // Each problem's canonical solution, then a function that returns nothing: the first
        // must pass and the second fail on every problem, so pass@1 is 1/2 everywhere.
        let Some(data) = herd_util::testing::shared("data/eval") else {
            return;
        };
        let samples = score_completions(&data, |doc| {
            let canonical = doc["canonical_solution"].as_str().unwrap().to_string();
            vec![canonical, "    return None\n".into()]
        });
        assert_eq!(samples.len(), 164);
        for s in &samples {
            let outcomes = &s.code_results[0].1;
            assert_eq!(outcomes[0], Outcome::Passed, "{}", s.doc["task_id"]);
            assert!(
                matches!(outcomes[1], Outcome::Failed(_)),
                "{}: {:?}",
                s.doc["task_id"],
                outcomes[1]
            );
            assert_eq!(pass_at(s, 1), 0.5);
        }
    }
}
