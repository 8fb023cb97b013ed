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
//! Each sequence samples with its own seeded [`Sampler`] from its own logits, and herd's kernels
//! compute every row of a batch on its own, so a request gives exactly the tokens
//! [`crate::Session::generate`] (and `herd generate`) gives for the same prompt and settings,
//! whatever else runs beside it (bit for bit with quantized and F16 GGUF weights; dense f32
//! weights go through candle's GEMM, whose blocking depends on the batch and may move the last
//! bits).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use herd_model::cache::KvStore;
use herd_model::{KvCache, Llama};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::generate::{FinishReason, GenerateConfig, GeneratedToken, PREFILL_CHUNK};
use crate::sampling::{log_softmax, top_k_logprobs, Sampler};
use crate::score::TokenScore;

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
    /// KV-cache token slots held by running sequences.
    pub kv_tokens: AtomicUsize,
    /// Steps run since the start.
    pub steps: AtomicUsize,
}

/// A request the engine is working on.
struct Sequence {
    request: Request,
    events: UnboundedSender<Event>,
    cache: KvCache,
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

/// What a sequence did in a step, to be applied after the model ran.
enum Outcome {
    Going,
    Done(Finished),
    Gone,
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
    /// The model's vocabulary size and layer count, to check and size requests here.
    vocab: usize,
    layers: usize,
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
        let (vocab, layers) = (model.config().vocab_size, model.config().n_layers);
        let worker = Worker {
            model,
            config: config.clone(),
            stats: stats.clone(),
            waiting: VecDeque::new(),
            running: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("herd-engine".into())
            .spawn(move || worker.run(inbox))
            .expect("the engine thread starts");
        Engine {
            commands,
            stats,
            config,
            vocab,
            layers,
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
            cache: KvCache::new(self.layers, capacity),
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

/// The engine thread's state.
struct Worker {
    model: Arc<Llama>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
}

impl Worker {
    fn run(mut self, inbox: Receiver<Command>) {
        loop {
            // Wait for work when there is none; otherwise take only what has arrived.
            let mut commands: Vec<Command> = Vec::new();
            if self.running.is_empty() && self.waiting.is_empty() {
                match inbox.recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => return self.cancel_all(),
                }
            }
            loop {
                match inbox.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.cancel_all(),
                }
            }
            for command in commands {
                match command {
                    Command::Submit(sequence) => self.waiting.push_back(*sequence),
                    Command::Shutdown => return self.cancel_all(),
                }
            }
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    /// Moves waiting requests into the running set while there is room.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(sequence) = self.waiting.pop_front() else {
                break;
            };
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            self.stats.requests.fetch_add(1, Ordering::SeqCst);
            self.running.push(sequence);
        }
        self.publish_running();
    }

    /// One batched step over the running sequences.
    fn step(&mut self) {
        // Which sequences take part, and with which tokens: every decoding sequence its newest
        // token; reading ones a whole prompt chunk each, as many as the step allows.
        let mut budget = self.config.prefill_tokens_per_step;
        let mut reading = 0;
        let mut chosen: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (i, s) in self.running.iter().enumerate() {
            let prompt = s.request.prompt.len();
            if s.read < prompt {
                let chunk = s.read..(s.read + PREFILL_CHUNK).min(prompt);
                if chunk.len() <= budget || reading == 0 {
                    budget = budget.saturating_sub(chunk.len());
                    reading += 1;
                    chosen.push((i, chunk));
                }
            } else {
                chosen.push((i, 0..0));
            }
        }
        let tokens: Vec<Vec<u32>> = chosen
            .iter()
            .map(|(i, range)| {
                let s = &self.running[*i];
                match s.next {
                    Some(next) if range.is_empty() => vec![next],
                    _ => s.request.prompt[range.clone()].to_vec(),
                }
            })
            .collect();
        // A prompt being scored returns every position of its chunk, the others their last.
        let every_position: Vec<bool> = chosen
            .iter()
            .map(|(i, range)| {
                !range.is_empty() && self.running[*i].request.prompt_logprobs.is_some()
            })
            .collect();
        let result = {
            let mut stores: Vec<&mut dyn KvStore> = Vec::with_capacity(chosen.len());
            let mut taking = chosen.iter().map(|(i, _)| *i).peekable();
            for (i, s) in self.running.iter_mut().enumerate() {
                if taking.peek() == Some(&i) {
                    taking.next();
                    stores.push(&mut s.cache);
                }
            }
            let ids: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
            self.model
                .step_rows(&ids, &mut stores, &every_position)
                .and_then(|hidden| self.model.logits(&hidden))
                .and_then(|logits| logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>())
        };
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                // The model failed on these inputs: end those requests with the reason.
                for (i, _) in chosen.iter().rev() {
                    let s = self.running.remove(*i);
                    let _ = s.events.send(Event::Failed(e.to_string()));
                }
                self.publish_running();
                return;
            }
        };
        self.stats.steps.fetch_add(1, Ordering::SeqCst);
        let mut rows = logits.iter();
        let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(chosen.len());
        for (((i, range), fed), &every) in chosen.iter().zip(&tokens).zip(&every_position) {
            let s = &mut self.running[*i];
            let skip = if every { fed.len() - 1 } else { 0 };
            if every {
                // Rows of positions range.start.. predict the prompt tokens after each.
                for (position, row) in (range.start + 1..).zip(rows.by_ref().take(skip)) {
                    s.prompt_scores.push(score_prompt_token(s, position, row));
                }
            }
            let last = rows.next().expect("one row per sequence at least");
            if !range.is_empty() {
                s.read = range.end;
                self.stats
                    .prompt_tokens
                    .fetch_add(fed.len(), Ordering::SeqCst);
                if s.read < s.request.prompt.len() {
                    if every {
                        s.prompt_scores.push(score_prompt_token(s, s.read, last));
                    }
                    outcomes.push((*i, Outcome::Going));
                    continue;
                }
                if s.request.prompt_logprobs.is_some() {
                    let scores = std::mem::take(&mut s.prompt_scores);
                    if s.events.send(Event::Prompt(scores)).is_err() {
                        outcomes.push((*i, Outcome::Gone));
                        continue;
                    }
                }
                if s.request.config.max_tokens == 0 {
                    outcomes.push((*i, finished(s, FinishReason::Length, None)));
                    continue;
                }
            }
            outcomes.push((*i, sample(s, last, &self.stats)));
        }
        // Apply the endings from the back, so indices stay valid; the counts are published
        // before the clients hear of their ends, so a client that has its answer sees them.
        let mut ended = Vec::new();
        for (i, outcome) in outcomes.into_iter().rev() {
            match outcome {
                Outcome::Going => {}
                Outcome::Done(finished) => ended.push((self.running.remove(i), finished)),
                Outcome::Gone => {
                    self.running.remove(i);
                }
            }
        }
        self.publish_running();
        for (s, finished) in ended {
            let _ = s.events.send(Event::Finished(finished));
        }
    }

    /// Publishes the running set's size and the KV slots it holds.
    fn publish_running(&self) {
        self.stats
            .running
            .store(self.running.len(), Ordering::SeqCst);
        let slots = self.running.iter().map(|s| s.cache.capacity()).sum();
        self.stats.kv_tokens.store(slots, Ordering::SeqCst);
    }

    /// Ends every request (shutdown): each hears it was cancelled.
    fn cancel_all(&mut self) {
        for s in self.running.drain(..).chain(self.waiting.drain(..)) {
            let _ = s.events.send(Event::Finished(Finished {
                finish: FinishReason::Cancelled,
                stop: None,
                prompt_tokens: s.read,
                completion_tokens: s.generated,
            }));
        }
        self.stats.running.store(0, Ordering::SeqCst);
        self.stats.waiting.store(0, Ordering::SeqCst);
        self.stats.kv_tokens.store(0, Ordering::SeqCst);
    }
}

/// `s`'s ending with the counts so far.
fn finished(s: &Sequence, finish: FinishReason, stop: Option<GeneratedToken>) -> Outcome {
    Outcome::Done(Finished {
        finish,
        stop,
        prompt_tokens: s.request.prompt.len(),
        completion_tokens: s.generated,
    })
}

/// The score of prompt token `position` from the logits of the position before it.
fn score_prompt_token(s: &Sequence, position: usize, logits: &[f32]) -> TokenScore {
    let top_k = s.request.prompt_logprobs.unwrap_or(0);
    TokenScore::from_logits(position, s.request.prompt[position], logits, top_k)
}

/// Chooses `s`'s next token from `logits` and tells its client; decides whether it goes on.
fn sample(s: &mut Sequence, logits: &[f32], stats: &EngineStats) -> Outcome {
    let config = &s.request.config;
    let id = s.sampler.sample(logits, &s.context);
    let logprobs = log_softmax(logits);
    let token = GeneratedToken {
        id,
        logprob: logprobs[id as usize],
        top: top_k_logprobs(&logprobs, config.top_logprobs),
    };
    if config.stop_tokens.contains(&id) {
        return finished(s, FinishReason::Stop, Some(token));
    }
    if s.events.send(Event::Token(token)).is_err() {
        return Outcome::Gone; // the client went away
    }
    stats.generated_tokens.fetch_add(1, Ordering::SeqCst);
    s.generated += 1;
    s.context.push(id);
    s.next = Some(id);
    // The cache holds the prompt and every generated token but the newest.
    let full = s.cache.len() + 1 >= s.cache.capacity();
    if s.generated >= config.max_tokens || full {
        return finished(s, FinishReason::Length, None);
    }
    Outcome::Going
}
