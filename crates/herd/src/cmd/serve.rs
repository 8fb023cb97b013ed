//! `herd serve`: the model behind an OpenAI-compatible HTTP API (herd-serve), for apps, agents
//! and evaluation harnesses that speak OpenAI's protocol.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use herd_infer::engine::{Engine, EngineConfig};
use herd_serve::{AppState, ServeSettings};

use super::ModelArgs;

/// Flags of `herd serve`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Point an OpenAI client at http://HOST:PORT/v1 (any model name is \
                        accepted). Endpoints: /v1/chat/completions, /v1/completions, /v1/models, \
                        /tokenize, /detokenize, /tokenizer_info, /health, /metrics. Ctrl-C or \
                        SIGTERM stops taking requests, lets running ones finish for \
                        --shutdown-grace seconds, then cancels the rest."
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most sequences decoded together (the rest wait in the queue).
    #[arg(long, short = 'p', default_value_t = 16, value_parser = super::values::count)]
    parallel: usize,
    /// Tokens one sequence may hold, prompt and reply (capped by the model's context).
    #[arg(long, short = 'c', default_value_t = 4096, value_parser = super::values::count)]
    ctx_size: usize,
    /// Prompt tokens read per step beside the decoding streams (whole 512-token chunks of as
    /// many prompts as fit; more gives new requests their first token sooner and running
    /// streams longer pauses).
    #[arg(long, default_value_t = 512, value_parser = super::values::count)]
    prefill_tokens: usize,
    /// Requests that may wait for a place; beyond that the server answers 503 with Retry-After.
    #[arg(long, default_value_t = 256, value_parser = super::values::count)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every request but /health.
    #[arg(long, env = "HERD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A Jinja chat template file to use instead of the model's own (e.g. Llama 3.1
    /// Instruct's, for tool calls).
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// The model id clients see and send (default: the model file's name).
    #[arg(long)]
    alias: Option<String>,
    /// Seconds a request may run before it is cancelled (504).
    #[arg(long, default_value_t = 600, value_parser = super::values::count)]
    timeout: usize,
    /// Seconds running requests get to finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 10)]
    shutdown_grace: u64,
}

/// Runs `herd serve`.
pub fn run(args: Args) -> Result<()> {
    let chat_template = match &args.chat_template {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read the chat template", path.display()))?,
        ),
        None => None,
    };
    let loaded = args.model.load()?;
    let model_id = args.alias.clone().unwrap_or_else(|| {
        args.model
            .model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "herd".into())
    });
    let engine = Engine::start(
        Arc::new(loaded.model),
        EngineConfig {
            max_running: args.parallel,
            context: args.ctx_size,
            max_waiting: args.queue,
            prefill_tokens_per_step: args.prefill_tokens,
        },
    );
    let context = engine.config().context;
    let settings = ServeSettings {
        model_id: model_id.clone(),
        api_key: args.api_key.clone(),
        chat_template,
        timeout: Duration::from_secs(args.timeout as u64),
        ..ServeSettings::default()
    };
    let state = AppState::new(engine, loaded.tokenizer, settings).map_err(|e| {
        match &args.chat_template {
            Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
            None => anyhow::anyhow!("the model's chat template: {e}; pass --chat-template"),
        }
    })?;
    let state = Arc::new(state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("herd-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address}: is the port taken?"))?;
        let local = listener.local_addr()?;
        eprintln!(
            "herd serve: {model_id} on http://{local}/v1 ({} sequences at a time, {context} \
             tokens each{})",
            args.parallel,
            if args.api_key.is_some() {
                ", API key required"
            } else {
                ""
            }
        );
        herd_serve::serve(
            listener,
            state,
            stop_signal(),
            Duration::from_secs(args.shutdown_grace),
        )
        .await
        .context("the server stopped with an error")
    })?;
    eprintln!("herd serve: stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM can be caught");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    eprintln!("herd serve: stopping (running requests get their grace period)");
}
