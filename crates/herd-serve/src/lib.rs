//! herd's OpenAI-compatible HTTP server (`herd serve`): axum on tokio in front of
//! [`herd_infer::engine::Engine`], which owns the model and batches continuously. Handlers turn
//! requests into engine requests and the engine's events into OpenAI's responses and
//! server-sent-event streams; they never touch the model. A client that disconnects drops its
//! channel, which cancels its sequences.
//!
//! Endpoints: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/tokenize`,
//! `/detokenize`, `/tokenizer_info`, `/health`, `/metrics`. Every error is OpenAI's error object
//! ([`error::ApiError`]).

pub mod body;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generation;
pub mod info;
pub mod metrics;
pub mod options;
pub mod prompt;
pub mod state;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

pub use error::ApiError;
pub use state::{AppState, ServeSettings};

/// `system_fingerprint` of every response: herd's version.
pub const FINGERPRINT: &str = concat!("herd-", env!("CARGO_PKG_VERSION"));

/// The routes, with the API-key check and OpenAI-style 404/405 answers.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(info::models))
        .route("/tokenize", post(info::tokenize))
        .route("/detokenize", post(info::detokenize))
        .route("/tokenizer_info", get(info::tokenizer_info))
        .route("/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                ..ApiError::invalid(format!("{} does not take {method}", uri.path()), None)
            }
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// With `--api-key`, every request but `/health` needs `Authorization: Bearer <key>`.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = &state.settings.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
        next.run(request).await
    } else {
        state.metrics.answered("unauthorized", 401);
        ApiError::unauthorized().into_response()
    }
}

/// Compares without leaving the position of the first difference in the timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Streams a response: `write` sends `data:` payloads (JSON chunks) on the channel it is given
/// until it is done or the client is gone (a send fails); then the request's duration is
/// recorded and `[DONE]` ends the stream.
pub fn stream_response<W, F>(state: Arc<AppState>, arrived: Instant, write: W) -> Response
where
    W: FnOnce(Arc<AppState>, UnboundedSender<String>) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (events, body) = unbounded_channel::<String>();
    tokio::spawn(async move {
        write(state.clone(), events.clone()).await;
        state.metrics.request_ended(arrived);
        let _ = events.send("[DONE]".into());
    });
    sse_response(body)
}

/// `result` as a response, counted under `endpoint` with its status.
pub fn answer<T: IntoResponse>(
    state: &AppState,
    endpoint: &str,
    result: Result<T, ApiError>,
) -> Response {
    let response = match result {
        Ok(body) => body.into_response(),
        Err(e) => e.into_response(),
    };
    state.metrics.answered(endpoint, response.status().as_u16());
    response
}

/// An SSE response whose events carry the `data:` payloads arriving on `body` (JSON chunks, then
/// `[DONE]`), with keep-alive comments every 15 s so proxies keep a quiet stream open.
fn sse_response(mut body: UnboundedReceiver<String>) -> Response {
    let stream = futures_util::stream::poll_fn(move |cx| {
        body.poll_recv(cx).map(|data| {
            data.map(|d| Ok::<_, std::convert::Infallible>(SseEvent::default().data(d)))
        })
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Serves on `listener` until `shutdown` completes; then new requests are refused, running
/// ones get `grace` to finish, and whatever still runs after that is cancelled (its stream ends
/// with an error object) before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let stopping = state.clone();
    let signal = async move {
        shutdown.await;
        stopping.stopping.store(true, Ordering::SeqCst);
        let engine_state = stopping.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            engine_state.engine.shutdown();
        });
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
}
