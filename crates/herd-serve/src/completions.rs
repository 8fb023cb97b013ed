//! `POST /v1/completions`: OpenAI's legacy completions, as evaluation harnesses use them — a
//! prompt as a string, a list of strings, a list of token ids or a list of such lists; `echo`;
//! `logprobs` in the legacy object (`tokens`, `token_logprobs` with `null` first,
//! `top_logprobs` as a list of `{token: logprob}`, `text_offset`), for the prompt too when
//! `echo` is set; `max_tokens: 0` with `echo` scores the prompt only (lm-evaluation-harness's
//! log-likelihoods).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use herd_infer::engine::Request;
use herd_infer::score::TokenScore;
use herd_infer::{GenerateConfig, GeneratedToken};
use herd_tokenizer::{StreamDecoder, Tokenizer};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::body::{parse, read_json, refuse_unsupported, Unsupported, LOGIT_BIAS};
use crate::error::ApiError;
use crate::generation::{start, Ending, Update};
use crate::options::{fresh_seed, token_budget, SamplingFields, StreamOptions};
use crate::state::{AppState, Envelope};

/// A completions request (fields herd does not know are ignored; `prompt` is read apart).
#[derive(Debug, Deserialize)]
struct CompletionRequest {
    max_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    echo: bool,
    logprobs: Option<usize>,
}

/// Fields OpenAI has and herd does not do.
const UNSUPPORTED: &[Unsupported] = &[
    LOGIT_BIAS,
    Unsupported {
        name: "suffix",
        neutral: empty_text,
        why: "herd does not fill in the middle",
    },
    Unsupported {
        name: "best_of",
        neutral: one,
        why: "use `n` and pick among the choices yourself",
    },
];

fn empty_text(value: &Value) -> bool {
    value.as_str().is_some_and(str::is_empty)
}

fn one(value: &Value) -> bool {
    value.as_u64() == Some(1)
}

/// OpenAI's default budget for completions.
const DEFAULT_MAX_TOKENS: usize = 16;

/// The most alternatives per token.
const MAX_LOGPROBS: usize = 20;

/// Answers a completions request.
pub async fn completions(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let arrived = Instant::now();
    let result = respond(state.clone(), body, arrived).await;
    crate::answer(&state, "completions", result)
}

/// One prompt of the request, as ids.
struct Prompt {
    ids: Vec<u32>,
}

/// Reads `prompt`: a string, a list of strings, a list of ids, or a list of lists of ids.
fn prompts(tokenizer: &Tokenizer, value: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    let bad = |message: String, param: String| ApiError::invalid(message, Some(&param));
    let text = |s: &str| {
        tokenizer
            .encode_prompt(s, true)
            .map_err(|e| ApiError::internal(e.to_string()))
    };
    let ids = |items: &[Value], param: String| -> Result<Vec<u32>, ApiError> {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| {
                        bad(
                            format!("`{param}[{i}]` is {v}, not a token id"),
                            format!("{param}[{i}]"),
                        )
                    })
            })
            .collect()
    };
    let prompts = match value {
        None | Some(Value::Null) => {
            return Err(bad("`prompt` is required".into(), "prompt".into()))
        }
        Some(Value::String(s)) => vec![text(s)?],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(bad("`prompt` is an empty list".into(), "prompt".into()))
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => text(s),
                    _ => Err(bad(
                        format!("`prompt[{i}]` is not a string like the first item"),
                        format!("prompt[{i}]"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Array(inner) => ids(inner, format!("prompt[{i}]")),
                    _ => Err(bad(
                        format!("`prompt[{i}]` is not a list of token ids like the first item"),
                        format!("prompt[{i}]"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => vec![ids(items, "prompt".into())?],
        },
        Some(other) => {
            return Err(bad(
                format!(
                    "`prompt` is {other}: send a string, a list of strings, a list of token ids \
                     or a list of such lists"
                ),
                "prompt".into(),
            ))
        }
    };
    prompts
        .into_iter()
        .enumerate()
        .map(|(i, ids)| {
            if ids.is_empty() {
                Err(bad(format!("prompt {i} is empty"), "prompt".into()))
            } else {
                Ok(Prompt { ids })
            }
        })
        .collect()
}

async fn respond(state: Arc<AppState>, body: Body, arrived: Instant) -> Result<Response, ApiError> {
    let mut raw = read_json(body, state.settings.max_body_bytes).await?;
    refuse_unsupported(&raw, UNSUPPORTED)?;
    let prompt_value = raw.as_object_mut().and_then(|o| o.remove("prompt"));
    let fields: SamplingFields = parse(&raw)?;
    let request: CompletionRequest = parse(&raw)?;
    let prompts = prompts(&state.tokenizer, prompt_value.as_ref())?;
    let logprobs = match request.logprobs {
        Some(k) if k > MAX_LOGPROBS => {
            return Err(ApiError::invalid(
                format!("`logprobs` is {k}; at most {MAX_LOGPROBS} alternatives are given"),
                Some("logprobs"),
            ))
        }
        k => k,
    };
    let n = fields.choices(state.settings.max_choices)?;
    if n * prompts.len() > state.settings.max_choices * 16 {
        return Err(ApiError::invalid(
            format!(
                "{} prompts × {n} choices is more than this server takes in one request",
                prompts.len()
            ),
            Some("prompt"),
        ));
    }
    let stop = fields.stop.clone().strings("stop")?;
    let seed = fresh_seed();
    let context = state.context();
    let mut requests = Vec::new();
    for prompt in &prompts {
        let budget = token_budget(
            Some(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            prompt.ids.len(),
            context,
            "max_tokens",
        )?;
        for i in 0..n {
            let mut sampling = fields.sampling(seed)?;
            sampling.seed = sampling.seed.wrapping_add(i as u64);
            requests.push(Request {
                prompt: prompt.ids.clone(),
                config: GenerateConfig {
                    max_tokens: budget,
                    sampling,
                    stop_tokens: fields.stop_tokens(state.tokenizer.stop_ids()),
                    top_logprobs: logprobs.unwrap_or(0),
                },
                prompt_logprobs: logprobs.filter(|_| request.echo),
            });
        }
    }
    let updates = start(&state, requests, "prompt", None, &stop, arrived)?;
    let reply = Reply {
        envelope: Envelope::new(&state, "cmpl"),
        echo: request.echo,
        logprobs,
        prompts: prompts.into_iter().map(|p| p.ids).collect(),
        n,
    };
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        return Ok(crate::stream_response(
            state,
            arrived,
            move |state, events| async move {
                write_stream(&state, &reply, updates, include_usage, &events).await;
            },
        ));
    }
    let choices = collect(&state, &reply, updates).await?;
    state.metrics.request_ended(arrived);
    let body_choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "text": c.text,
                "logprobs": c.legacy.as_ref().map(|l| l.to_json(0)),
                "finish_reason": c.ending.as_ref().map(|e| e.reason),
            })
        })
        .collect();
    let body = reply.envelope.wrap(
        "text_completion",
        Value::Array(body_choices),
        Some(usage(&choices, n)),
    );
    Ok(axum::Json(body).into_response())
}

/// What all choices of the response share.
struct Reply {
    envelope: Envelope,
    echo: bool,
    logprobs: Option<usize>,
    /// The prompts' ids.
    prompts: Vec<Vec<u32>>,
    /// Choices per prompt (choice `i` continues prompt `i / n`).
    n: usize,
}

impl Reply {
    /// The prompt choice `index` continues.
    fn prompt(&self, index: usize) -> &[u32] {
        &self.prompts[index / self.n]
    }

    /// Choices in all.
    fn choices(&self) -> usize {
        self.prompts.len() * self.n
    }
}

/// One choice's progress.
struct ChoiceState<'t> {
    text: String,
    legacy: Option<Legacy<'t>>,
    /// An echo without logprobs: the prompt's text goes first, with the first update.
    echo_pending: bool,
    ending: Option<Ending>,
}

impl<'t> ChoiceState<'t> {
    fn new(tokenizer: &'t Tokenizer, reply: &Reply) -> ChoiceState<'t> {
        ChoiceState {
            text: String::new(),
            legacy: reply.logprobs.map(|_| Legacy::new(tokenizer)),
            echo_pending: reply.echo && reply.logprobs.is_none(),
            ending: None,
        }
    }

    /// Applies `update`: returns the text and the logprobs it adds (for a stream chunk).
    fn apply(
        &mut self,
        tokenizer: &Tokenizer,
        reply: &Reply,
        index: usize,
        update: Update,
    ) -> Result<(String, Option<Value>), ApiError> {
        let prompt = reply.prompt(index);
        let before = self.legacy.as_ref().map_or(0, |l| l.tokens.len());
        let mut text = if std::mem::take(&mut self.echo_pending) {
            tokenizer.decode(prompt).unwrap_or_default()
        } else {
            String::new()
        };
        match update {
            Update::Prompt(scores) => {
                if let Some(legacy) = &mut self.legacy {
                    legacy.add_prompt(prompt, &scores);
                }
                text.push_str(&tokenizer.decode(prompt).unwrap_or_default());
            }
            Update::Text {
                text: generated,
                tokens,
            } => {
                if let Some(legacy) = &mut self.legacy {
                    legacy.add_generated(&tokens);
                }
                text.push_str(&generated);
            }
            Update::End(ending) => {
                // The stop token is reported among the logprobs (not in the text), as vLLM
                // does: lm-evaluation-harness drops the last entry as the generated token.
                if let (Some(legacy), Some(stop)) = (&mut self.legacy, &ending.stop) {
                    legacy.add_generated(std::slice::from_ref(stop));
                }
                self.ending = Some(ending);
            }
            Update::Error(e) => return Err(e),
        }
        self.text.push_str(&text);
        let logprobs = self.legacy.as_ref().map(|l| l.to_json(before));
        Ok((text, logprobs))
    }
}

/// Runs every choice to its end.
async fn collect<'t>(
    state: &'t AppState,
    reply: &Reply,
    mut updates: UnboundedReceiver<(usize, Update)>,
) -> Result<Vec<ChoiceState<'t>>, ApiError> {
    let mut choices: Vec<ChoiceState> = (0..reply.choices())
        .map(|_| ChoiceState::new(&state.tokenizer, reply))
        .collect();
    let mut open = choices.len();
    while open > 0 {
        let Some((index, update)) = updates.recv().await else {
            return Err(ApiError::stopping());
        };
        if matches!(update, Update::End(_)) {
            open -= 1;
        }
        choices[index].apply(&state.tokenizer, reply, index, update)?;
    }
    Ok(choices)
}

/// Streams `text_completion` chunks.
async fn write_stream(
    state: &AppState,
    reply: &Reply,
    mut updates: UnboundedReceiver<(usize, Update)>,
    include_usage: bool,
    events: &UnboundedSender<String>,
) {
    let n = reply.choices();
    let mut choices: Vec<ChoiceState> = (0..n)
        .map(|_| ChoiceState::new(&state.tokenizer, reply))
        .collect();
    let chunk = |choices: Value, usage: Option<Value>| {
        reply
            .envelope
            .wrap("text_completion", choices, usage)
            .to_string()
    };
    let mut open = n;
    while open > 0 {
        let Some((index, update)) = updates.recv().await else {
            return;
        };
        let ends = matches!(update, Update::End(_));
        let (text, logprobs) = match choices[index].apply(&state.tokenizer, reply, index, update) {
            Ok(added) => added,
            Err(e) => {
                let _ = events.send(e.body().to_string());
                return;
            }
        };
        let finish = if ends {
            open -= 1;
            choices[index].ending.as_ref().map(|e| e.reason)
        } else {
            None
        };
        let body = json!([{"index": index, "text": text, "logprobs": logprobs,
                           "finish_reason": finish}]);
        if events.send(chunk(body, None)).is_err() {
            return;
        }
    }
    if include_usage {
        let _ = events.send(chunk(json!([]), Some(usage(&choices, reply.n))));
    }
}

/// `usage`: each prompt (of `n` choices) counted once, every choice's completion.
fn usage(choices: &[ChoiceState], n: usize) -> Value {
    let endings: Vec<Option<&Ending>> = choices.iter().map(|c| c.ending.as_ref()).collect();
    crate::generation::usage(&endings, n)
}

/// The legacy logprobs object, built token by token; `text_offset` counts characters of the
/// returned text, found by decoding the tokens in order.
struct Legacy<'t> {
    tokenizer: &'t Tokenizer,
    decoder: StreamDecoder<'t>,
    chars: usize,
    tokens: Vec<String>,
    token_logprobs: Vec<Option<f32>>,
    top_logprobs: Vec<Option<Map<String, Value>>>,
    text_offset: Vec<usize>,
}

impl<'t> Legacy<'t> {
    fn new(tokenizer: &'t Tokenizer) -> Legacy<'t> {
        Legacy {
            tokenizer,
            decoder: StreamDecoder::new(tokenizer),
            chars: 0,
            tokens: Vec::new(),
            token_logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            text_offset: Vec::new(),
        }
    }

    fn push(&mut self, id: u32, logprob: Option<f32>, top: Option<&[(u32, f32)]>) {
        self.text_offset.push(self.chars);
        if let Ok(Some(piece)) = self.decoder.push(id) {
            self.chars += piece.chars().count();
        }
        self.tokens
            .push(self.tokenizer.decode(&[id]).unwrap_or_default());
        self.token_logprobs.push(logprob);
        self.top_logprobs.push(top.map(|top| {
            top.iter()
                .map(|&(id, lp)| {
                    let text = self.tokenizer.decode(&[id]).unwrap_or_default();
                    (text, json!(lp))
                })
                .collect()
        }));
    }

    /// The prompt: its first token has no score (`null`), the others theirs.
    fn add_prompt(&mut self, prompt: &[u32], scores: &[TokenScore]) {
        for (i, &id) in prompt.iter().enumerate() {
            match i.checked_sub(1).and_then(|j| scores.get(j)) {
                Some(score) => self.push(id, Some(score.logprob), Some(&score.top)),
                None => self.push(id, None, None),
            }
        }
    }

    fn add_generated(&mut self, tokens: &[GeneratedToken]) {
        for t in tokens {
            self.push(t.id, Some(t.logprob), Some(&t.top));
        }
    }

    /// The object for the tokens from `from` on.
    fn to_json(&self, from: usize) -> Value {
        json!({
            "tokens": self.tokens[from..],
            "token_logprobs": self.token_logprobs[from..],
            "top_logprobs": self.top_logprobs[from..],
            "text_offset": self.text_offset[from..],
        })
    }
}
