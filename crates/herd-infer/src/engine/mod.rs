//! The serving engine: one thread owns the model and runs it in steps of continuous batching.
//! Requests join the running set between steps and leave it when they finish, are cancelled or
//! their client goes away; every step takes each running sequence's newest token, plus one chunk
//! of [`PREFILL_CHUNK`] prompt tokens for a sequence still reading its prompt, through one batched
//! [`Llama::step`] — long prompts never stall the streams already running. The engine knows no
//! HTTP: a caller submits a [`Request`] and reads [`Event`]s from a channel (tokio's unbounded
//! one, read with `recv().await` by a server or `blocking_recv()` by a command); dropping the
//! receiver cancels the request. A request may ask for its prompt to be scored too (the
//! log-probability of every prompt token, as evaluation harnesses ask with `echo`), and with a
//! budget of 0 tokens that is all it does.
//!
//! Keys and values live in one paged cache ([`herd_model::paged`]) whose blocks the
//! [`BlockManager`] hands out: a sequence takes blocks as it grows and gives them back when it
//! ends or is cancelled. Full prompt blocks are kept under a name chained from their tokens, so
//! a later prompt with the same prefix (a common system prompt, few-shot examples) shares them
//! instead of computing them again; a request whose prompt another running sequence is still
//! reading (the `n` samples of one request, the K samples of rejection sampling) waits for it
//! and then forks from it, sharing every block including the last, partly filled one, which is
//! copied when either writes into it. Prompts being scored compute every position themselves
//! (they need the logits of each).
//!
//! Each sequence samples with its own seeded [`Sampler`] from its own logits, and herd's kernels
//! compute every row of a batch on its own, so a request gives exactly the tokens
//! [`crate::Session::generate`] (and `herd generate`) gives for the same prompt and settings,
//! whatever else runs beside it (bit for bit with quantized and F16 GGUF weights; dense f32
//! weights go through candle's GEMM, whose blocking depends on the batch and may move the last
//! bits).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use herd_model::paged::blocks_for;
use herd_model::Llama;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::blocks::{block_names, BlockHash};
use crate::generate::{FinishReason, GenerateConfig, GeneratedToken, PREFILL_CHUNK};
use crate::sampling::Sampler;
use crate::score::TokenScore;
use worker::Worker;

mod worker;

/// How the engine schedules.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences decoded together.
    pub max_running: usize,
    /// Tokens one sequence may hold (prompt and generated), at most the model's context.
    pub context: usize,
    /// Requests that may wait for a place beyond the running ones; more are refused.
    pub max_waiting: usize,
    /// Prompt tokens read per step, beside the decoding sequences' one token each: the next
    /// chunk (up to [`PREFILL_CHUNK`] tokens, cut where `herd generate` cuts) of as many reading
    /// sequences as fit, and always one.
    pub prefill_tokens_per_step: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_running: 16,
            context: 4096,
            max_waiting: 256,
            prefill_tokens_per_step: PREFILL_CHUNK,
        }
    }
}

/// A generation request: the whole context as token ids, and how to continue it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt (non-empty).
    pub prompt: Vec<u32>,
    /// Token budget (0: score the prompt only), sampling, stop tokens, log-probabilities.
    pub config: GenerateConfig,
    /// Score the prompt's tokens too, with this many alternatives each (`None`: do not).
    pub prompt_logprobs: Option<usize>,
}

/// What a request's channel carries.
#[derive(Debug, Clone)]
pub enum Event {
    /// The scores of the prompt's tokens after the first (when asked for), sent once the whole
    /// prompt is read and before any generated token.
    Prompt(Vec<TokenScore>),
    /// A generated token (stop tokens are not sent as tokens).
    Token(GeneratedToken),
    /// The end: why, and the counts.
    Finished(Finished),
    /// The engine failed on this request (the model's error); nothing more follows.
    Failed(String),
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Stop token, token budget (or context), or cancelled.
    pub finish: FinishReason,
    /// The stop token that ended it, if one did, with its log-probability (completions report
    /// it among the logprobs, as vLLM does, though not in the text).
    pub stop: Option<GeneratedToken>,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Tokens generated (the stop token not counted).
    pub completion_tokens: usize,
}

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    /// Too many requests are waiting; try again later.
    Busy {
        /// Requests waiting.
        waiting: usize,
    },
    /// The prompt leaves no room to generate in the context.
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// The context.
        context: usize,
    },
    /// The request itself is wrong (empty prompt, a token outside the vocabulary, bad sampling
    /// values).
    Invalid(String),
    /// The engine has shut down.
    Stopped,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Busy { waiting } => {
                write!(
                    f,
                    "the server is busy ({waiting} requests waiting); retry shortly"
                )
            }
            SubmitError::TooLong { prompt, context } => write!(
                f,
                "the prompt has {prompt} tokens and the context holds {context}: nothing can be \
                 generated"
            ),
            SubmitError::Invalid(m) => f.write_str(m),
            SubmitError::Stopped => f.write_str("the engine has stopped"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Counts the engine keeps up to date (for `/metrics` and health checks).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sequences decoding or reading their prompt.
    pub running: AtomicUsize,
    /// Requests waiting for a place.
    pub waiting: AtomicUsize,
    /// Requests taken since the start.
    pub requests: AtomicUsize,
    /// Prompt tokens processed since the start.
    pub prompt_tokens: AtomicUsize,
    /// Tokens generated since the start.
    pub generated_tokens: AtomicUsize,
    /// KV-cache blocks held by running sequences.
    pub kv_blocks_used: AtomicUsize,
    /// KV-cache blocks in the pool.
    pub kv_blocks_total: AtomicUsize,
    /// Prompt tokens taken from cached blocks or a forked sequence instead of computed.
    pub prefix_cached_tokens: AtomicUsize,
    /// Steps run since the start.
    pub steps: AtomicUsize,
}

/// A request the engine is working on.
struct Sequence {
    /// Unique among the engine's sequences (a follower names its leader by it).
    id: u64,
    request: Request,
    events: UnboundedSender<Event>,
    /// The block table: the blocks holding positions `0..`, [`BLOCK_TOKENS`] each.
    blocks: Vec<u32>,
    /// Positions whose keys and values are stored.
    cached: usize,
    /// Positions the sequence may reach (prompt and budget, within the context).
    capacity: usize,
    /// The names of the prompt's full blocks (registered as reading completes each).
    names: Vec<BlockHash>,
    /// The running sequence with the same prompt this one waits for, to fork from it once it
    /// has read the prompt.
    follows: Option<u64>,
    /// Scores of the prompt read so far (when the request asked for them).
    prompt_scores: Vec<TokenScore>,
    /// Prompt tokens already in the cache.
    read: usize,
    /// Prompt and generated tokens (the repetition penalty's context).
    context: Vec<u32>,
    sampler: Sampler,
    generated: usize,
    /// The token to feed next when decoding.
    next: Option<u32>,
}

/// Messages to the engine thread.
enum Command {
    Submit(Box<Sequence>),
    Shutdown,
}

/// The engine: a handle to the thread that owns the model.
pub struct Engine {
    commands: Sender<Command>,
    stats: Arc<EngineStats>,
    config: EngineConfig,
    /// The model's vocabulary size, to check requests here.
    vocab: usize,
    next_id: AtomicUsize,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the engine thread on `model`.
    pub fn start(model: Arc<Llama>, config: EngineConfig) -> Engine {
        let config = EngineConfig {
            context: config.context.min(model.config().max_seq_len),
            max_running: config.max_running.max(1),
            prefill_tokens_per_step: config.prefill_tokens_per_step.max(1),
            ..config
        };
        let (commands, inbox) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let vocab = model.config().vocab_size;
        // Every running sequence fits at its longest, with a block to spare for copy-on-write.
        let blocks = config.max_running * (blocks_for(config.context) + 1);
        stats.kv_blocks_total.store(blocks, Ordering::SeqCst);
        let worker = Worker::new(model, config.clone(), stats.clone(), blocks);
        let thread = std::thread::Builder::new()
            .name("herd-engine".into())
            .spawn(move || worker.run(inbox))
            .expect("the engine thread starts");
        Engine {
            commands,
            stats,
            config,
            vocab,
            next_id: AtomicUsize::new(0),
            thread: Some(thread),
        }
    }

    /// The configuration in force (the context capped by the model's).
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Queues `request`; its tokens and end arrive on the returned channel. Dropping the
    /// receiver cancels the request.
    pub fn submit(&self, request: Request) -> Result<UnboundedReceiver<Event>, SubmitError> {
        let prompt = request.prompt.len();
        if prompt == 0 {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        if let Some(bad) = request.prompt.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(SubmitError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab
            )));
        }
        request
            .config
            .sampling
            .validate()
            .map_err(SubmitError::Invalid)?;
        // Room to generate one token, or (scoring only) room for the prompt.
        let room = prompt < self.config.context
            || (request.config.max_tokens == 0 && prompt == self.config.context);
        if !room {
            return Err(SubmitError::TooLong {
                prompt,
                context: self.config.context,
            });
        }
        let waiting = self.stats.waiting.load(Ordering::SeqCst);
        if waiting >= self.config.max_waiting {
            return Err(SubmitError::Busy { waiting });
        }
        let (events, receiver) = unbounded_channel();
        let capacity = (prompt + request.config.max_tokens).min(self.config.context);
        let sequence = Box::new(Sequence {
            sampler: Sampler::new(request.config.sampling.clone()),
            context: request.prompt.clone(),
            id: self.next_id.fetch_add(1, Ordering::SeqCst) as u64,
            blocks: Vec::new(),
            cached: 0,
            capacity,
            names: block_names(&request.prompt),
            follows: None,
            request,
            events,
            prompt_scores: Vec::new(),
            read: 0,
            generated: 0,
            next: None,
        });
        self.stats.waiting.fetch_add(1, Ordering::SeqCst);
        self.commands.send(Command::Submit(sequence)).map_err(|_| {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            SubmitError::Stopped
        })?;
        Ok(receiver)
    }

    /// Stops the engine: running and waiting requests end as cancelled, the thread exits,
    /// and later submissions are refused as [`SubmitError::Stopped`]. Returns at once (dropping
    /// the engine waits for the thread).
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
