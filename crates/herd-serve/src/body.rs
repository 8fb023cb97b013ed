//! Reading a request body into OpenAI's shapes: the JSON is parsed here (not by axum's
//! extractor, whose errors are plain text), wrong types are reported with the path of the field
//! (`messages[2].content`), fields herd does not support are refused by name, and unknown
//! fields are ignored, as OpenAI's own server does.

use axum::body::{to_bytes, Body};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// Reads at most `limit` bytes of `body` as a JSON object.
pub async fn read_json(body: Body, limit: usize) -> Result<Value, ApiError> {
    let bytes = to_bytes(body, limit).await.map_err(|_| ApiError {
        status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        ..ApiError::invalid(
            format!("the request body is larger than the server's limit of {limit} bytes"),
            None,
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(
            format!(
                "the request body is not valid JSON ({e}); send a JSON object with \
                 `Content-Type: application/json`"
            ),
            None,
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid(
            "the request body must be a JSON object",
            None,
        ));
    }
    Ok(value)
}

/// Reads `T` out of `value` (several views of one body read the same value), naming the field
/// of a type error.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path);
        let inner = e.into_inner().to_string();
        let message = match &param {
            Some(p) => format!("`{p}`: {inner}"),
            None => inner,
        };
        ApiError::invalid(message, param.as_deref())
    })
}

/// A request field herd does not do.
pub struct Unsupported {
    /// The field.
    pub name: &'static str,
    /// Whether a value asks for nothing (an empty `logit_bias`, `"type": "text"`).
    pub neutral: fn(&Value) -> bool,
    /// Why, and what to do instead.
    pub why: &'static str,
}

/// `logit_bias`, which neither endpoint does.
pub const LOGIT_BIAS: Unsupported = Unsupported {
    name: "logit_bias",
    neutral: empty,
    why: "herd does not bias logits",
};

/// Refuses a field that is present (and not null or its neutral value) but that herd does not
/// do, so a client never gets an answer that silently ignored what it asked.
pub fn refuse_unsupported(body: &Value, fields: &[Unsupported]) -> Result<(), ApiError> {
    for field in fields {
        if let Some(value) = body.get(field.name) {
            if !value.is_null() && !(field.neutral)(value) {
                return Err(ApiError::unsupported(field.name, field.why));
            }
        }
    }
    Ok(())
}

/// Neutral when an empty object or list.
pub fn empty(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Neutral never: any value is refused.
pub fn never(_: &Value) -> bool {
    false
}

/// A field that may be a string or a list of strings (`stop`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// No value.
    #[default]
    None,
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, checked: at most 16 and none empty.
    pub fn strings(self, param: &str) -> Result<Vec<String>, ApiError> {
        let strings = match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if strings.len() > 16 {
            return Err(ApiError::invalid(
                format!(
                    "`{param}` has {} strings; at most 16 are allowed",
                    strings.len()
                ),
                Some(param),
            ));
        }
        if strings.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                format!("`{param}` holds an empty string, which would stop at once"),
                Some(param),
            ));
        }
        Ok(strings)
    }
}
