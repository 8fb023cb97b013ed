//! The small endpoints: `/tokenize`, `/detokenize` and `/tokenizer_info` in the shapes vLLM
//! serves and lm-evaluation-harness's remote tokenizer calls (`{"prompt", "add_special_tokens"}`
//! → `{"tokens"}`; `{"tokens"}` → `{"prompt"}`; `eos_token`, `bos_token`, `chat_template`),
//! llama-server's `content` spelling accepted too; `/v1/models`, `/health` and `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::answer;
use crate::body::{parse, read_json};
use crate::error::ApiError;
use crate::prompt::{chat_prompt, ChatMessage, Tool, ToolChoice};
use crate::state::AppState;

/// A `/tokenize` request: text (`prompt`, or llama-server's `content`) or chat `messages`
/// (with `tools`), as vLLM takes them.
#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    #[serde(alias = "content")]
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    /// Tools offered with `messages` (as in a chat request).
    #[serde(default)]
    tools: Vec<Tool>,
    /// Add the BOS token the model's prompts start with (default true, as transformers).
    #[serde(alias = "add_special")]
    add_special_tokens: Option<bool>,
}

/// `POST /tokenize`: `{"tokens", "count", "max_model_len"}`. Special-token text (`<|eot_id|>`)
/// becomes the special token, as HF tokenizers read it.
pub async fn tokenize(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let raw = read_json(body, state.settings.max_body_bytes).await?;
        let request: TokenizeRequest = parse(&raw)?;
        let tokenizer = &state.tokenizer;
        let internal = |e: herd_tokenizer::Error| ApiError::internal(e.to_string());
        let tokens = match (&request.prompt, &request.messages) {
            (Some(text), None) => {
                if request.add_special_tokens.unwrap_or(true) {
                    tokenizer.encode_prompt(text, true).map_err(internal)?
                } else {
                    tokenizer.encode(text, true).map_err(internal)?
                }
            }
            (None, Some(messages)) => {
                let choice = ToolChoice::read(None, !request.tools.is_empty())?;
                chat_prompt(&state, messages, &request.tools, &choice)?.ids
            }
            _ => {
                return Err(ApiError::invalid(
                    "send either `prompt` (text) or `messages` (a chat)",
                    Some("prompt"),
                ))
            }
        };
        Ok(axum::Json(json!({
            "tokens": tokens,
            "count": tokens.len(),
            "max_model_len": state.context(),
        })))
    }
    .await;
    answer(&state, "tokenize", result)
}

/// A `/detokenize` request.
#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// `POST /detokenize`: `{"prompt"}` (and llama-server's `content`, the same text).
pub async fn detokenize(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let raw = read_json(body, state.settings.max_body_bytes).await?;
        let request: DetokenizeRequest = parse(&raw)?;
        let text = state.tokenizer.decode(&request.tokens).map_err(|e| {
            ApiError::invalid(
                format!(
                    "{e} (the vocabulary has {} ids)",
                    state.tokenizer.vocab_size()
                ),
                Some("tokens"),
            )
        })?;
        Ok(axum::Json(json!({"prompt": text, "content": text})))
    }
    .await;
    answer(&state, "detokenize", result)
}

/// `GET /tokenizer_info`: the special tokens, the chat template and the context.
pub async fn tokenizer_info(State(state): State<Arc<AppState>>) -> Response {
    let tokenizer = &state.tokenizer;
    let text = |id: Option<u32>| id.map(|i| tokenizer.token_text(Some(i)));
    let body = json!({
        "tokenizer_class": if tokenizer.is_llama3() { "llama3-tiktoken" } else { "byte-level-bpe" },
        "bos_token": text(tokenizer.bos_id()),
        "eos_token": text(tokenizer.stop_ids().first().copied()),
        "pad_token": null,
        "add_bos_token": tokenizer.prompt_bos().is_some(),
        "chat_template": state.chat_template_source(),
        "model_max_length": state.context(),
        "vocab_size": tokenizer.vocab_size(),
    });
    answer(&state, "tokenizer_info", Ok(axum::Json(body)))
}

/// `GET /v1/models`: the one model served.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let body = json!({
        "object": "list",
        "data": [{
            "id": state.settings.model_id,
            "object": "model",
            "created": state.started,
            "owned_by": "herd",
            "max_model_len": state.context(),
        }],
    });
    answer(&state, "models", Ok(axum::Json(body)))
}

/// `GET /health`: 200 while serving, 503 once shutdown has begun.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.stopping.load(Ordering::SeqCst) {
        return ApiError::stopping().into_response();
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.engine.stats());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
