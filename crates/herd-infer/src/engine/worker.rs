//! The engine thread: admission, the paged cache's blocks (prefix reuse, forks, copy-on-write),
//! and the batched step with its sampling.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use herd_model::kernel::par_for_each;
use herd_model::paged::{blocks_for, BLOCK_TOKENS};
use herd_model::{Llama, PagedKv, PagedSeq};

use super::{Command, EngineConfig, EngineStats, Event, Finished, Sequence};
use crate::blocks::BlockManager;
use crate::generate::{FinishReason, GeneratedToken, PREFILL_CHUNK};
use crate::score::TokenScore;

/// What a sequence did in a step, to be applied after the model ran.
enum Outcome {
    Going,
    Done(Finished),
    Gone,
}

/// The engine thread's state.
pub(super) struct Worker {
    model: Arc<Llama>,
    kv: PagedKv,
    manager: BlockManager,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
}

impl Worker {
    /// The state of an engine over `model` with a pool of `blocks` KV blocks.
    pub(super) fn new(
        model: Arc<Llama>,
        config: EngineConfig,
        stats: Arc<EngineStats>,
        blocks: usize,
    ) -> Worker {
        Worker {
            kv: PagedKv::new(model.config(), blocks),
            manager: BlockManager::new(blocks),
            model,
            config,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// The engine thread's loop: take commands, admit, step; until shutdown.
    pub(super) fn run(mut self, inbox: Receiver<Command>) {
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
            let sequence = self.reuse_prefix(sequence);
            self.running.push(sequence);
        }
        self.publish_running();
    }

    /// Lets a newly admitted sequence start from what is already computed: it follows a
    /// running sequence still reading the same prompt, or else shares the cached blocks of its
    /// prompt's longest named prefix (all but the last prompt token, whose logits it needs).
    /// Prompts being scored compute every position themselves.
    fn reuse_prefix(&mut self, mut s: Sequence) -> Sequence {
        if s.request.prompt_logprobs.is_some() {
            return s;
        }
        let prompt = &s.request.prompt;
        if let Some(leader) = self.running.iter().find(|r| {
            r.follows.is_none() && r.read < r.request.prompt.len() && &r.request.prompt == prompt
        }) {
            s.follows = Some(leader.id);
            return s;
        }
        let shareable = (prompt.len() - 1) / BLOCK_TOKENS;
        for &name in s.names.iter().take(shareable) {
            let Some(block) = self.manager.lookup(name) else {
                break;
            };
            self.manager.share(block);
            s.blocks.push(block);
        }
        s.cached = s.blocks.len() * BLOCK_TOKENS;
        s.read = s.cached;
        self.stats
            .prefix_cached_tokens
            .fetch_add(s.cached, Ordering::SeqCst);
        s
    }

    /// Gives `s` blocks of its own for `new` more positions: fresh ones past its table's end,
    /// and a copy of any block it shares that the positions fall in (copy-on-write).
    fn make_room(&mut self, s: usize, new: usize) -> Result<(), String> {
        let seq = &mut self.running[s];
        let (first, end) = (seq.cached / BLOCK_TOKENS, blocks_for(seq.cached + new));
        let exhausted = |m: &BlockManager| {
            format!(
                "the KV cache has no free block ({} of {} held)",
                m.used(),
                m.total()
            )
        };
        for index in first..end {
            if index == seq.blocks.len() {
                let block = self.manager.allocate();
                seq.blocks
                    .push(block.ok_or_else(|| exhausted(&self.manager))?);
            } else if self.manager.holders(seq.blocks[index]) > 1 {
                let copy = self.manager.allocate();
                let copy = copy.ok_or_else(|| exhausted(&self.manager))?;
                self.kv.copy_block(seq.blocks[index], copy);
                self.manager.release(seq.blocks[index]);
                seq.blocks[index] = copy;
            }
        }
        Ok(())
    }

    /// Takes sequence `i` out of the running set: its blocks go back to the manager, and the
    /// sequences that followed it read their prompt themselves.
    fn remove(&mut self, i: usize) -> Sequence {
        let s = self.running.remove(i);
        s.blocks.iter().for_each(|&b| self.manager.release(b));
        for r in &mut self.running {
            if r.follows == Some(s.id) {
                r.follows = None;
            }
        }
        s
    }

    /// Starts follower `f` from its leader `l`, which has just read their common prompt: the
    /// same blocks, shared.
    fn fork(&mut self, l: usize, f: usize) {
        let blocks = self.running[l].blocks.clone();
        blocks.iter().for_each(|&b| self.manager.share(b));
        let cached = self.running[l].cached;
        let follower = &mut self.running[f];
        follower.blocks = blocks;
        follower.cached = cached;
        follower.read = follower.request.prompt.len();
        follower.follows = None;
        self.stats
            .prefix_cached_tokens
            .fetch_add(cached, Ordering::SeqCst);
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
            if s.follows.is_some() {
                continue;
            }
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
        let room = chosen
            .iter()
            .zip(&tokens)
            .try_for_each(|((i, _), fed)| self.make_room(*i, fed.len()));
        let result = room.and_then(|()| {
            let seqs: Vec<PagedSeq> = chosen
                .iter()
                .map(|(i, _)| PagedSeq {
                    blocks: &self.running[*i].blocks,
                    cached: self.running[*i].cached,
                })
                .collect();
            let ids: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
            self.model
                .step_rows(&ids, &mut self.kv, &seqs, &every_position)
                .and_then(|hidden| self.model.logits(&hidden))
                .and_then(|logits| logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>())
                .map_err(|e| e.to_string())
        });
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                // The model failed on these inputs: end those requests with the reason.
                for (i, _) in chosen.iter().rev() {
                    let s = self.remove(*i);
                    let _ = s.events.send(Event::Failed(e.clone()));
                }
                self.publish_running();
                return;
            }
        };
        self.stats.steps.fetch_add(1, Ordering::SeqCst);
        let mut draws = self.draw_all(&chosen, &every_position, &logits);
        let mut rows = logits.iter();
        let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(chosen.len());
        // Sequences that finished reading their prompt, with their last row's logits.
        let mut read_prompt: Vec<(usize, &[f32])> = Vec::new();
        for ((((i, range), fed), &every), draw) in chosen
            .iter()
            .zip(&tokens)
            .zip(&every_position)
            .zip(draws.iter_mut())
        {
            let s = &mut self.running[*i];
            s.cached += fed.len();
            let skip = if every { fed.len() - 1 } else { 0 };
            if every {
                // Rows of positions range.start.. predict the prompt tokens after each.
                for (position, row) in (range.start + 1..).zip(rows.by_ref().take(skip)) {
                    s.prompt_scores.push(score_prompt_token(s, position, row));
                }
            }
            let last = rows.next().expect("one row per sequence at least");
            if !range.is_empty() {
                // Name the prompt blocks this chunk completed.
                let full = |read: usize| (read / BLOCK_TOKENS).min(s.names.len());
                for b in full(s.read)..full(range.end) {
                    self.manager.register(s.blocks[b], s.names[b]);
                }
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
                read_prompt.push((*i, last));
                outcomes.push((*i, begin(s, draw.take(), last, &self.stats)));
                continue;
            }
            let token = draw.take().expect("a decoding sequence's token is drawn");
            outcomes.push((*i, take(s, token, &self.stats)));
        }
        // The followers of those that read their prompt fork from them and sample their own
        // first token from the same logits.
        for (leader, last) in read_prompt {
            let id = self.running[leader].id;
            let followers: Vec<usize> = (0..self.running.len())
                .filter(|&f| self.running[f].follows == Some(id))
                .collect();
            for f in followers {
                self.fork(leader, f);
                outcomes.push((f, begin(&mut self.running[f], None, last, &self.stats)));
            }
        }
        // Apply the endings from the back, so indices stay valid; the counts are published
        // before the clients hear of their ends, so a client that has its answer sees them.
        outcomes.sort_by_key(|(i, _)| *i);
        let mut ended = Vec::new();
        for (i, outcome) in outcomes.into_iter().rev() {
            match outcome {
                Outcome::Going => {}
                Outcome::Done(finished) => ended.push((self.remove(i), finished)),
                Outcome::Gone => {
                    self.remove(i);
                }
            }
        }
        self.publish_running();
        for (s, finished) in ended {
            let _ = s.events.send(Event::Finished(finished));
        }
    }

    /// Draws the next token of every chosen sequence that samples after this step (those
    /// decoding, and those whose prompt ends here with a budget), on the worker pool: each from
    /// its last row of `logits`, with its own sampler.
    fn draw_all(
        &mut self,
        chosen: &[(usize, std::ops::Range<usize>)],
        every_position: &[bool],
        logits: &[Vec<f32>],
    ) -> Vec<Option<GeneratedToken>> {
        let mut draws: Vec<Option<GeneratedToken>> = vec![None; chosen.len()];
        let mut jobs: Vec<(&mut Sequence, &[f32], &mut Option<GeneratedToken>)> = Vec::new();
        let mut row = 0;
        let mut running = self.running.iter_mut().enumerate();
        for (((i, range), &every), draw) in chosen.iter().zip(every_position).zip(&mut draws) {
            let s = running
                .find(|(j, _)| j == i)
                .map(|(_, s)| s)
                .expect("chosen sequences are running, in order");
            row += if every { range.len() } else { 1 };
            let samples = range.is_empty()
                || (range.end == s.request.prompt.len() && s.request.config.max_tokens > 0);
            if samples {
                jobs.push((s, &logits[row - 1], draw));
            }
        }
        par_for_each(&mut jobs, |_, (s, logits, draw)| {
            let top = s.request.config.top_logprobs;
            **draw = Some(GeneratedToken::draw(
                &mut s.sampler,
                logits,
                &s.context,
                top,
            ));
        });
        draws
    }

    /// Publishes the running set's size and the KV blocks it holds.
    fn publish_running(&self) {
        self.stats
            .running
            .store(self.running.len(), Ordering::SeqCst);
        self.stats
            .kv_blocks_used
            .store(self.manager.used(), Ordering::SeqCst);
    }

    /// Ends every request (shutdown): each hears it was cancelled.
    fn cancel_all(&mut self) {
        while !self.running.is_empty() {
            let s = self.remove(self.running.len() - 1);
            self.waiting.push_front(s);
        }
        for s in self.waiting.drain(..) {
            let _ = s.events.send(Event::Finished(Finished {
                finish: FinishReason::Cancelled,
                stop: None,
                prompt_tokens: s.read,
                completion_tokens: s.generated,
            }));
        }
        self.stats.running.store(0, Ordering::SeqCst);
        self.stats.waiting.store(0, Ordering::SeqCst);
        self.stats
            .kv_blocks_used
            .store(self.manager.used(), Ordering::SeqCst);
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

/// What `s` does once its whole prompt is read, `last` being the logits after it: hands its
/// client the prompt's scores (when asked), then ends (a budget of 0) or takes its first token
/// (`drawn` already, or drawn here).
fn begin(
    s: &mut Sequence,
    drawn: Option<GeneratedToken>,
    last: &[f32],
    stats: &EngineStats,
) -> Outcome {
    if s.request.prompt_logprobs.is_some() {
        let scores = std::mem::take(&mut s.prompt_scores);
        if s.events.send(Event::Prompt(scores)).is_err() {
            return Outcome::Gone;
        }
    }
    if s.request.config.max_tokens == 0 {
        return finished(s, FinishReason::Length, None);
    }
    let token = drawn.unwrap_or_else(|| {
        let top = s.request.config.top_logprobs;
        GeneratedToken::draw(&mut s.sampler, last, &s.context, top)
    });
    take(s, token, stats)
}

/// The score of prompt token `position` from the logits of the position before it.
fn score_prompt_token(s: &Sequence, position: usize, logits: &[f32]) -> TokenScore {
    let top_k = s.request.prompt_logprobs.unwrap_or(0);
    TokenScore::from_logits(position, s.request.prompt[position], logits, top_k)
}

/// Hands `s`'s next token to its client (unless it is a stop token); decides whether `s` goes
/// on.
fn take(s: &mut Sequence, token: GeneratedToken, stats: &EngineStats) -> Outcome {
    let config = &s.request.config;
    let id = token.id;
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
    let full = s.cached + 1 >= s.capacity;
    if s.generated >= config.max_tokens || full {
        return finished(s, FinishReason::Length, None);
    }
    Outcome::Going
}
