//! What every handler shares: the engine, the tokenizer and chat format, the settings, and the
//! metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_infer::engine::Engine;
use herd_tokenizer::chat::template::ChatTemplate;
use herd_tokenizer::Tokenizer;

use crate::metrics::Metrics;

/// How the server answers, beside what the engine does.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The id the model is served under (`model` in requests and responses).
    pub model_id: String,
    /// When set, every request needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// A Jinja chat template that replaces the model's own.
    pub chat_template: Option<String>,
    /// Longest a request may run before it is cancelled.
    pub timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Most choices (`n`) one request may ask for.
    pub max_choices: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            model_id: "herd".into(),
            api_key: None,
            chat_template: None,
            timeout: Duration::from_secs(600),
            max_body_bytes: 8 << 20,
            max_choices: 16,
        }
    }
}

/// The server's state, shared by all handlers.
pub struct AppState {
    /// The batching engine that owns the model.
    pub engine: Engine,
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// The settings.
    pub settings: ServeSettings,
    /// The chat template in force (`--chat-template`, else the model's own), compiled once.
    template: Option<ChatTemplate>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Unix seconds at start (`created` of `/v1/models`).
    pub started: u64,
    /// Set once shutdown has begun: new requests are refused, `/health` says so.
    pub stopping: AtomicBool,
    /// Responses started, for their ids.
    responses: AtomicU64,
}

impl AppState {
    /// State around a started engine; a chat template that does not parse is refused here.
    pub fn new(
        engine: Engine,
        tokenizer: Tokenizer,
        settings: ServeSettings,
    ) -> Result<AppState, String> {
        let source = settings
            .chat_template
            .as_deref()
            .or(tokenizer.chat_template());
        let template = source.map(ChatTemplate::new).transpose()?;
        Ok(AppState {
            engine,
            tokenizer,
            settings,
            template,
            metrics: Metrics::new(),
            started: unix_seconds(),
            stopping: AtomicBool::new(false),
            responses: AtomicU64::new(0),
        })
    }

    /// The chat template's text: `--chat-template`, else the model's own.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.settings
            .chat_template
            .as_deref()
            .or(self.tokenizer.chat_template())
    }

    /// The compiled chat template, when there is one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The most tokens one sequence may hold.
    pub fn context(&self) -> usize {
        self.engine.config().context
    }
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What every response and stream chunk of one request carries: its id, creation time and the
/// model's name, with `system_fingerprint`.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's id.
    pub model: String,
}

impl Envelope {
    /// A new response's envelope, its id `prefix-` with the server's start time and a count.
    pub fn new(state: &AppState, prefix: &str) -> Envelope {
        Envelope {
            id: format!(
                "{prefix}-{:x}{:08x}",
                state.started,
                state.responses.fetch_add(1, Ordering::Relaxed)
            ),
            created: unix_seconds(),
            model: state.settings.model_id.clone(),
        }
    }

    /// The response object: `object` (`chat.completion`, `text_completion`, a chunk), the
    /// choices, and `usage` when given.
    pub fn wrap(
        &self,
        object: &str,
        choices: serde_json::Value,
        usage: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut body = serde_json::json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": crate::FINGERPRINT,
            "choices": choices,
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        body
    }
}
