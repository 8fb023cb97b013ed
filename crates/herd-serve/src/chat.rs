//! `POST /v1/chat/completions`: OpenAI's chat completions — `n` choices, sampling, `stop`,
//! `logprobs`/`top_logprobs`, `usage`, tools — answered whole or streamed as server-sent
//! `chat.completion.chunk`s ending with `data: [DONE]`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use herd_infer::engine::Request;
use herd_infer::{GenerateConfig, GeneratedToken};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::body::{never, parse, read_json, refuse_unsupported, Unsupported, LOGIT_BIAS};
use crate::error::ApiError;
use crate::generation::{start, Ending, Update};
use crate::options::{fresh_seed, token_budget, SamplingFields, StreamOptions};
use crate::prompt::{
    chat_prompt, may_be_tool_call, read_tool_calls, ChatMessage, Tool, ToolChoice,
};
use crate::state::{AppState, Envelope};

/// A chat completions request (fields herd does not know are ignored).
#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<usize>,
    #[serde(default)]
    tools: Vec<Tool>,
}

/// Fields OpenAI has and herd does not do.
const UNSUPPORTED: &[Unsupported] = &[
    LOGIT_BIAS,
    Unsupported {
        name: "response_format",
        neutral: text_format,
        why: "herd has no constrained decoding (JSON mode or schemas)",
    },
    Unsupported {
        name: "functions",
        neutral: never,
        why: "the legacy `functions` field is replaced by `tools`",
    },
    Unsupported {
        name: "function_call",
        neutral: never,
        why: "the legacy `function_call` field is replaced by `tool_choice`",
    },
    Unsupported {
        name: "audio",
        neutral: never,
        why: "this model reads and writes text only",
    },
    Unsupported {
        name: "modalities",
        neutral: text_only,
        why: "this model writes text only",
    },
    Unsupported {
        name: "prediction",
        neutral: never,
        why: "herd has no predicted outputs",
    },
    Unsupported {
        name: "best_of",
        neutral: never,
        why: "use `n` and pick among the choices yourself",
    },
];

fn text_format(value: &Value) -> bool {
    value.get("type").and_then(Value::as_str) == Some("text")
}

fn text_only(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|a| a.iter().all(|m| m == "text"))
}

/// The most alternatives per token (OpenAI's limit).
const MAX_TOP_LOGPROBS: usize = 20;

/// Answers a chat completions request.
pub async fn chat_completions(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let arrived = Instant::now();
    let result = respond(state.clone(), body, arrived).await;
    crate::answer(&state, "chat", result)
}

async fn respond(state: Arc<AppState>, body: Body, arrived: Instant) -> Result<Response, ApiError> {
    let raw = read_json(body, state.settings.max_body_bytes).await?;
    refuse_unsupported(&raw, UNSUPPORTED)?;
    let tool_choice = raw.get("tool_choice").cloned();
    let fields: SamplingFields = parse(&raw)?;
    let request: ChatRequest = parse(&raw)?;
    let choice = ToolChoice::read(tool_choice.as_ref(), !request.tools.is_empty())?;
    let prompt = chat_prompt(&state, &request.messages, &request.tools, &choice)?;
    let top_logprobs = match (request.logprobs, request.top_logprobs) {
        (_, Some(k)) if k > MAX_TOP_LOGPROBS => {
            return Err(ApiError::invalid(
                format!("`top_logprobs` is {k}; at most {MAX_TOP_LOGPROBS} are given"),
                Some("top_logprobs"),
            ))
        }
        (false, Some(k)) if k > 0 => {
            return Err(ApiError::invalid(
                "`top_logprobs` needs `logprobs: true`",
                Some("top_logprobs"),
            ))
        }
        (_, k) => k.unwrap_or(0),
    };
    let (requested, param) = match (request.max_completion_tokens, request.max_tokens) {
        (Some(n), _) => (Some(n), "max_completion_tokens"),
        (None, n) => (n, "max_tokens"),
    };
    if requested == Some(0) {
        return Err(ApiError::invalid(
            format!("`{param}` must be at least 1"),
            Some(param),
        ));
    }
    let context = state.context();
    let budget = token_budget(requested, prompt.ids.len(), context, param)?;
    let n = fields.choices(state.settings.max_choices)?;
    let stop = fields.stop.clone().strings("stop")?;
    let seed = fresh_seed();
    let requests = (0..n)
        .map(|i| {
            let mut sampling = fields.sampling(seed)?;
            sampling.seed = sampling.seed.wrapping_add(i as u64);
            Ok(Request {
                prompt: prompt.ids.clone(),
                config: GenerateConfig {
                    max_tokens: budget,
                    sampling,
                    stop_tokens: fields.stop_tokens(state.tokenizer.stop_ids()),
                    top_logprobs,
                },
                prompt_logprobs: None,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let updates = start(
        &state,
        requests,
        "messages",
        (!prompt.prefix.is_empty()).then_some(prompt.prefix.as_str()),
        &stop,
        arrived,
    )?;
    let reply = Reply {
        envelope: Envelope::new(&state, "chatcmpl"),
        logprobs: request.logprobs,
        prefix: prompt.prefix,
        tools_active: prompt.tools_active,
        eom: state.tokenizer.token_id("<|eom_id|>"),
    };
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        Ok(stream(state, reply, n, updates, include_usage, arrived))
    } else {
        whole(&state, reply, n, updates, arrived).await
    }
}

/// What every choice of one response shares.
struct Reply {
    envelope: Envelope,
    logprobs: bool,
    prefix: String,
    tools_active: bool,
    eom: Option<u32>,
}

/// One choice's progress.
#[derive(Default)]
struct ChoiceState {
    text: String,
    tokens: Vec<GeneratedToken>,
    /// Text held back from a stream while it may be a tool call.
    holding: bool,
    ending: Option<Ending>,
}

impl Reply {
    /// The tool calls of a finished reply, when it is one (`indexed` for stream deltas, which
    /// carry each call's position).
    fn calls(&self, choice: &ChoiceState, indexed: bool) -> Option<Vec<Value>> {
        if !self.tools_active {
            return None;
        }
        let ending = choice.ending.as_ref()?;
        let waits = ending.stop.as_ref().is_some_and(|t| Some(t.id) == self.eom);
        let calls = read_tool_calls(&format!("{}{}", self.prefix, choice.text), waits)?;
        Some(
            calls
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut call = json!({
                        "id": format!(
                            "call_{}_{i}",
                            self.envelope.id.trim_start_matches("chatcmpl-")
                        ),
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    });
                    if indexed {
                        call["index"] = json!(i);
                    }
                    call
                })
                .collect(),
        )
    }

    /// OpenAI's chat logprobs object for `tokens`.
    fn logprobs(&self, state: &AppState, tokens: &[GeneratedToken]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let entry = |id: u32, logprob: f32| {
            let text = state.tokenizer.decode(&[id]).unwrap_or_default();
            json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()})
        };
        let content: Vec<Value> = tokens
            .iter()
            .map(|t| {
                let mut e = entry(t.id, t.logprob);
                e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
                e
            })
            .collect();
        json!({ "content": content })
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> String {
        self.envelope
            .wrap("chat.completion.chunk", choices, usage)
            .to_string()
    }
}

/// `usage` over all choices (one prompt, counted once, as OpenAI does).
fn usage(choices: &[ChoiceState]) -> Value {
    let endings: Vec<Option<&Ending>> = choices.iter().map(|c| c.ending.as_ref()).collect();
    crate::generation::usage(&endings, choices.len())
}

/// Collects every choice, then answers one `chat.completion`.
async fn whole(
    state: &AppState,
    reply: Reply,
    n: usize,
    mut updates: UnboundedReceiver<(usize, Update)>,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let mut choices: Vec<ChoiceState> = (0..n).map(|_| ChoiceState::default()).collect();
    let mut open = n;
    while open > 0 {
        let Some((index, update)) = updates.recv().await else {
            return Err(ApiError::stopping());
        };
        let choice = &mut choices[index];
        match update {
            Update::Prompt(_) => {}
            Update::Text { text, tokens } => {
                choice.text.push_str(&text);
                choice.tokens.extend(tokens);
            }
            Update::End(ending) => {
                choice.ending = Some(ending);
                open -= 1;
            }
            Update::Error(e) => return Err(e),
        }
    }
    state.metrics.request_ended(arrived);
    let body_choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ending = c.ending.as_ref().expect("every choice ended");
            let (message, finish) = match reply.calls(c, false) {
                Some(calls) => (
                    json!({"role": "assistant", "content": null, "tool_calls": calls}),
                    "tool_calls",
                ),
                // A reply opened as a call that did not become one keeps its opening.
                None => (
                    json!({"role": "assistant", "content": format!("{}{}", reply.prefix, c.text)}),
                    ending.reason,
                ),
            };
            json!({
                "index": i,
                "message": message,
                "logprobs": reply.logprobs(state, &c.tokens),
                "finish_reason": finish,
            })
        })
        .collect();
    let body = reply.envelope.wrap(
        "chat.completion",
        Value::Array(body_choices),
        Some(usage(&choices)),
    );
    Ok(axum::Json(body).into_response())
}

/// Streams the choices as server-sent events.
fn stream(
    state: Arc<AppState>,
    reply: Reply,
    n: usize,
    updates: UnboundedReceiver<(usize, Update)>,
    include_usage: bool,
    arrived: Instant,
) -> Response {
    crate::stream_response(state, arrived, move |state, events| async move {
        write_stream(&state, reply, n, updates, include_usage, &events).await;
    })
}

/// Turns updates into chunks until every choice ends, an error, or the client leaves.
async fn write_stream(
    state: &AppState,
    reply: Reply,
    n: usize,
    mut updates: UnboundedReceiver<(usize, Update)>,
    include_usage: bool,
    events: &UnboundedSender<String>,
) {
    let send = |chunk: String| events.send(chunk).is_ok();
    let mut choices: Vec<ChoiceState> = (0..n)
        .map(|_| ChoiceState {
            holding: reply.tools_active,
            ..ChoiceState::default()
        })
        .collect();
    for i in 0..n {
        let delta = json!([{"index": i, "delta": {"role": "assistant", "content": ""},
                            "logprobs": null, "finish_reason": null}]);
        if !send(reply.chunk(delta, None)) {
            return;
        }
    }
    let mut open = n;
    while open > 0 {
        let Some((index, update)) = updates.recv().await else {
            return;
        };
        let choice = &mut choices[index];
        match update {
            Update::Prompt(_) => {}
            Update::Text { text, tokens } => {
                choice.text.push_str(&text);
                if choice.holding {
                    choice.tokens.extend(tokens);
                    if may_be_tool_call(&format!("{}{}", reply.prefix, choice.text)) {
                        continue;
                    }
                    // Not a call after all: send what was held.
                    choice.holding = false;
                    let held = std::mem::take(&mut choice.tokens);
                    let content = choice.text.clone();
                    if !send(
                        reply.chunk(content_delta(state, &reply, index, &content, &held), None),
                    ) {
                        return;
                    }
                    continue;
                }
                if !send(reply.chunk(content_delta(state, &reply, index, &text, &tokens), None)) {
                    return;
                }
            }
            Update::End(ending) => {
                open -= 1;
                choice.ending = Some(ending);
                let choice = &choices[index];
                let ending = choice.ending.as_ref().expect("just set");
                let last = match reply.calls(choice, true) {
                    Some(calls) => json!([{"index": index, "delta": {"tool_calls": calls},
                                           "logprobs": null, "finish_reason": "tool_calls"}]),
                    None if choice.holding => {
                        let text = format!("{}{}", reply.prefix, choice.text);
                        let mut delta = content_delta(state, &reply, index, &text, &choice.tokens);
                        delta[0]["finish_reason"] = json!(ending.reason);
                        delta
                    }
                    None => json!([{"index": index, "delta": {}, "logprobs": null,
                                    "finish_reason": ending.reason}]),
                };
                if !send(reply.chunk(last, None)) {
                    return;
                }
            }
            Update::Error(e) => {
                let _ = send(e.body().to_string());
                return;
            }
        }
    }
    if include_usage {
        let _ = send(reply.chunk(json!([]), Some(usage(&choices))));
    }
}

/// A chunk's choices with a content delta.
fn content_delta(
    state: &AppState,
    reply: &Reply,
    index: usize,
    text: &str,
    tokens: &[GeneratedToken],
) -> Value {
    json!([{"index": index, "delta": {"content": text},
            "logprobs": reply.logprobs(state, tokens), "finish_reason": null}])
}
