//! OpenAI's error object: every failure the server answers — malformed JSON, a wrong type, an
//! unsupported field, a prompt too long, a full queue, a missing key — is
//! `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status, so a client
//! library raises its usual exception with a message that says what to change.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `authentication_error`, …).
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A short machine-readable code, when there is one.
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (a full queue).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 about the request, naming `param` when given.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }

    /// A 400 for a field herd does not support (rather than silently ignoring what it asks).
    pub fn unsupported(param: &str, why: &str) -> ApiError {
        ApiError {
            code: Some("unsupported_parameter"),
            ..ApiError::invalid(format!("`{param}` is not supported: {why}"), Some(param))
        }
    }

    /// A 401: the API key is missing or wrong.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "a valid API key is required: send `Authorization: Bearer <key>` with the \
                      key given to `herd serve --api-key`"
                .into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    /// A 404 for a path the server does not have.
    pub fn not_found(path: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "no endpoint {path}: herd serves /v1/chat/completions, /v1/completions, \
                 /v1/models, /tokenize, /detokenize, /tokenizer_info, /health and /metrics"
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
            retry_after: None,
        }
    }

    /// A 503 with `Retry-After`: the queue is full.
    pub fn busy(message: String) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            kind: "server_busy",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(1),
        }
    }

    /// A 503: the server is shutting down.
    pub fn stopping() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down".into(),
            kind: "server_error",
            param: None,
            code: Some("shutting_down"),
            retry_after: None,
        }
    }

    /// A 504: the request ran past the server's `--timeout`.
    pub fn timeout(seconds: u64) -> ApiError {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!(
                "the request ran longer than the server's limit of {seconds} s and was cancelled; \
                 ask for fewer tokens or start the server with a longer --timeout"
            ),
            kind: "timeout",
            param: None,
            code: Some("timeout"),
            retry_after: None,
        }
    }

    /// A 500: the model failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// The JSON body: `{"error": {...}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
