//! A herd model answering the harness's three requests the way its `hf` backend does:
//! log-likelihoods of continuations (context and continuation tokenized as one string and split
//! at the context, trailing spaces moved to the continuation), rolling log-likelihoods in
//! disjoint windows of the model's context, and generation (greedy or sampled) cut at stop
//! strings.
//!
//! Continuations of one context share it: the context goes through the model once, on the
//! paged KV cache, and each continuation reads its blocks (the last, partly filled block is
//! copied per continuation). Sequences of several documents run in one step. Every row's numbers
//! are independent of the batch and of the chunking (herd's paged attention guarantees it), so
//! batching changes the speed, never the scores.

use anyhow::{bail, Result};
use herd_infer::generate::PREFILL_CHUNK;
use std::sync::Arc;
use std::time::Duration;

use herd_infer::engine::{Engine, EngineConfig, Event, Request as EngineRequest};
use herd_infer::sampling::SamplingConfig;
use herd_infer::GenerateConfig;
use herd_model::paged::{blocks_for, BLOCK_TOKENS};
use herd_model::{Llama, PagedKv, PagedSeq};
use herd_tokenizer::{StreamDecoder, Tokenizer};
use tokio::sync::mpsc::error::TryRecvError;

/// Tokens one batched step of scoring may hold (rows of logits kept at once: `vocab` floats
/// each).
const STEP_TOKENS: usize = PREFILL_CHUNK;

/// Tokens of prompts and continuations gathered into one batch of documents.
const BATCH_TOKENS: usize = 4 * PREFILL_CHUNK;

/// Generations decoded together (each step runs one token of each).
const GENERATION_BATCH: usize = 16;

/// One generation request: the prompt, its stop strings and its token budget.
#[derive(Debug, Clone)]
pub struct Generation<'a> {
    /// The prompt text.
    pub context: &'a str,
    /// Stop strings: the text is cut before the first occurrence of each.
    pub until: &'a [String],
    /// Most new tokens.
    pub max_gen_toks: usize,
    /// How tokens are chosen (the default is greedy).
    pub sampling: SamplingConfig,
}

/// The score of one continuation: its log-likelihood and whether greedy decoding gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loglikelihood {
    /// `Σ log p(token | before)` over the continuation's tokens.
    pub logprob: f64,
    /// Whether every continuation token is the model's most likely one there.
    pub is_greedy: bool,
}

/// A model and its tokenizer as an evaluation backend.
pub struct EvalModel<'m> {
    model: Arc<Llama>,
    tokenizer: &'m Tokenizer,
    /// The longest sequence scored or generated (the model's context).
    pub max_length: usize,
    /// Most contexts (documents, or rolling windows) scored in one batch; `None`: as many as
    /// fit a batch's token budget.
    pub batch_size: Option<usize>,
}

/// One continuation to score: `tokens[..tokens.len() - scored]` is context.
struct Scoring {
    tokens: Vec<u32>,
    scored: usize,
}

impl Scoring {
    /// Tokens whose keys are needed but whose logits are not (shared within a group).
    fn prefix(&self) -> &[u32] {
        &self.tokens[..self.tokens.len() - self.scored - 1]
    }
    /// Tokens whose logits score the continuation (the last context token and all but the
    /// last continuation token).
    fn scoring_inputs(&self) -> &[u32] {
        &self.tokens[self.tokens.len() - self.scored - 1..self.tokens.len() - 1]
    }
    fn targets(&self) -> &[u32] {
        &self.tokens[self.tokens.len() - self.scored..]
    }
}

impl<'m> EvalModel<'m> {
    /// A backend over `model` and `tokenizer`.
    pub fn new(model: Arc<Llama>, tokenizer: &'m Tokenizer) -> EvalModel<'m> {
        EvalModel {
            max_length: model.config().max_seq_len,
            model,
            tokenizer,
            batch_size: None,
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.tokenizer
    }

    /// `tok_encode`: the tokenizer's default special tokens (BOS when it adds one, unless the
    /// text already starts with it); special-token text in the string is special, as in HF.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let starts_with_bos = self
            .tokenizer
            .prompt_bos()
            .is_some_and(|b| text.starts_with(&self.tokenizer.token_text(Some(b))));
        Ok(if starts_with_bos {
            self.tokenizer.encode(text, true)?
        } else {
            self.tokenizer.encode_prompt(text, true)?
        })
    }

    /// The token that stands for an empty context (BOS, else the end of text).
    pub fn prefix_token(&self) -> Result<u32> {
        self.tokenizer
            .bos_id()
            .or_else(|| self.tokenizer.stop_ids().first().copied())
            .ok_or_else(|| anyhow::anyhow!("the tokenizer has neither a BOS nor an EOS token"))
    }

    /// Context and continuation ids (`_encode_pair`, and the empty-context rule of
    /// `loglikelihood`).
    pub fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        if context.is_empty() {
            let cont = self.tokenizer.encode(continuation, true)?;
            let prefix = self.prefix_token()?;
            return Ok(match cont.first() {
                Some(&first) if first == prefix => (cont[..1].to_vec(), cont[1..].to_vec()),
                _ => (vec![prefix], cont),
            });
        }
        let trimmed = context.trim_end();
        let (context, continuation) = (
            trimmed,
            format!("{}{continuation}", &context[trimmed.len()..]),
        );
        let whole = self.encode(&format!("{context}{continuation}"))?;
        let context_ids = self.encode(context)?;
        let split = context_ids.len().min(whole.len());
        Ok((context_ids, whole[split..].to_vec()))
    }

    /// Log-likelihoods of `(context, continuation)` token pairs; `progress` is told how many
    /// pairs each batch finished.
    pub fn loglikelihood_tokens(
        &self,
        pairs: &[(Vec<u32>, Vec<u32>)],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Loglikelihood>> {
        let work: Vec<Scoring> = pairs
            .iter()
            .map(|(ctx, cont)| {
                if cont.is_empty() {
                    bail!("a continuation has no tokens");
                }
                if cont.len() > self.max_length {
                    bail!(
                        "a continuation of {} tokens is longer than the model's context ({})",
                        cont.len(),
                        self.max_length
                    );
                }
                let mut tokens: Vec<u32> = ctx.iter().chain(cont).copied().collect();
                // The harness keeps the last max_length + 1 tokens (the last one is only a
                // target).
                if tokens.len() > self.max_length + 1 {
                    tokens.drain(..tokens.len() - self.max_length - 1);
                }
                Ok(Scoring {
                    tokens,
                    scored: cont.len(),
                })
            })
            .collect::<Result<_>>()?;
        // Groups: runs of requests with the same prefix (a document's choices).
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        for i in 0..work.len() {
            match groups.last_mut() {
                Some(g) if work[g.start].prefix() == work[i].prefix() => g.end = i + 1,
                _ => groups.push(i..i + 1),
            }
        }
        let mut results = Vec::with_capacity(work.len());
        let mut batch: Vec<std::ops::Range<usize>> = Vec::new();
        let mut batch_tokens = 0;
        for g in groups {
            let tokens = work[g.start].prefix().len()
                + work[g.clone()].iter().map(|s| s.scored).sum::<usize>();
            let full = batch_tokens + tokens > BATCH_TOKENS
                || self.batch_size.is_some_and(|n| batch.len() >= n);
            if !batch.is_empty() && full {
                let done = self.score_batch(&work, &batch)?;
                progress(done.len());
                results.extend(done);
                batch.clear();
                batch_tokens = 0;
            }
            batch.push(g);
            batch_tokens += tokens;
        }
        if !batch.is_empty() {
            let done = self.score_batch(&work, &batch)?;
            progress(done.len());
            results.extend(done);
        }
        Ok(results)
    }

    /// Scores the requests of a batch of groups: each group's prefix once, then every member's
    /// continuation on a table that shares the prefix's blocks.
    fn score_batch(
        &self,
        work: &[Scoring],
        groups: &[std::ops::Range<usize>],
    ) -> Result<Vec<Loglikelihood>> {
        let mut next_block = 0u32;
        let mut take = |n: usize| -> Vec<u32> {
            let ids = (next_block..next_block + n as u32).collect();
            next_block += n as u32;
            ids
        };
        let prefix_tables: Vec<Vec<u32>> = groups
            .iter()
            .map(|g| take(blocks_for(work[g.start].prefix().len())))
            .collect();
        let mut member_tables: Vec<Vec<u32>> = Vec::new();
        let mut copies: Vec<(u32, u32)> = Vec::new();
        for (g, prefix_table) in groups.iter().zip(&prefix_tables) {
            let prefix_len = work[g.start].prefix().len();
            let shared = prefix_len / BLOCK_TOKENS;
            for i in g.clone() {
                let mut table = prefix_table[..shared].to_vec();
                if !prefix_len.is_multiple_of(BLOCK_TOKENS) {
                    let own = take(1)[0];
                    copies.push((prefix_table[shared], own));
                    table.push(own);
                }
                let total = blocks_for(prefix_len + work[i].scored);
                let more = total - table.len();
                table.extend(take(more));
                member_tables.push(table);
            }
        }
        let mut kv = PagedKv::new(self.model.config(), next_block as usize);
        // The prefixes, in rounds of chunks.
        let prefixes: Vec<(&[u32], &[u32], usize)> = groups
            .iter()
            .zip(&prefix_tables)
            .map(|(g, t)| (work[g.start].prefix(), t.as_slice(), 0))
            .collect();
        self.run_rounds(&mut kv, &prefixes, false, |_, _| Ok(()))?;
        for (from, to) in copies {
            kv.copy_block(from, to);
        }
        // The continuations, every position's logits scored.
        let members: Vec<usize> = groups.iter().flat_map(|g| g.clone()).collect();
        let scoring: Vec<(&[u32], &[u32], usize)> = members
            .iter()
            .zip(&member_tables)
            .map(|(&i, t)| {
                (
                    work[i].scoring_inputs(),
                    t.as_slice(),
                    work[i].prefix().len(),
                )
            })
            .collect();
        let mut sums = vec![
            Loglikelihood {
                logprob: 0.0,
                is_greedy: true
            };
            members.len()
        ];
        self.run_rounds(&mut kv, &scoring, true, |seq, rows| {
            let targets = work[members[seq.0]].targets();
            for (row, target) in rows.iter().zip(&targets[seq.1..]) {
                let (logprob, greedy) = score_row(row, *target);
                sums[seq.0].logprob += logprob;
                sums[seq.0].is_greedy &= greedy;
            }
            Ok(())
        })?;
        Ok(sums)
    }

    /// Feeds sequences `(tokens, table, cached)` through the model in rounds of chunks (a
    /// sequence's chunk `k` runs in round `k`), steps of at most [`STEP_TOKENS`] tokens. With
    /// `every_position`, `on_rows((sequence, first token index), logits rows)` sees each chunk's
    /// logits.
    fn run_rounds(
        &self,
        kv: &mut PagedKv,
        seqs: &[(&[u32], &[u32], usize)],
        every_position: bool,
        mut on_rows: impl FnMut((usize, usize), &[Vec<f32>]) -> Result<()>,
    ) -> Result<()> {
        let longest = seqs.iter().map(|s| s.0.len()).max().unwrap_or(0);
        for start in (0..longest).step_by(PREFILL_CHUNK) {
            let mut step: Vec<usize> = Vec::new();
            let mut step_tokens = 0;
            let chunk = |i: usize| -> &[u32] {
                let t = seqs[i].0;
                &t[start.min(t.len())..(start + PREFILL_CHUNK).min(t.len())]
            };
            let live: Vec<usize> = (0..seqs.len()).filter(|&i| !chunk(i).is_empty()).collect();
            for (n, &i) in live.iter().enumerate() {
                step.push(i);
                step_tokens += chunk(i).len();
                let next = live.get(n + 1).map(|&j| chunk(j).len());
                if next.is_none_or(|len| step_tokens + len > STEP_TOKENS) {
                    let tokens: Vec<&[u32]> = step.iter().map(|&i| chunk(i)).collect();
                    let paged: Vec<PagedSeq> = step
                        .iter()
                        .map(|&i| PagedSeq {
                            blocks: seqs[i].1,
                            cached: seqs[i].2 + start,
                        })
                        .collect();
                    let hidden = self.model.step_rows(
                        &tokens,
                        kv,
                        &paged,
                        &vec![every_position; step.len()],
                    )?;
                    if every_position {
                        let logits = self.model.logits(&hidden)?.to_vec2::<f32>()?;
                        let mut row = 0;
                        for &i in &step {
                            let n = chunk(i).len();
                            on_rows((i, start), &logits[row..row + n])?;
                            row += n;
                        }
                    }
                    step.clear();
                    step_tokens = 0;
                }
            }
        }
        Ok(())
    }

    /// The log-likelihood of each text, in the harness's disjoint rolling windows of the
    /// model's context (the first window starts from the prefix token).
    pub fn rolling_windows(&self, text: &str) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let tokens = self.encode(text)?;
        Ok(rolling_windows(
            &tokens,
            self.prefix_token()?,
            self.max_length,
        ))
    }

    /// Greedy generations, each after its `context` (left-truncated to leave room for
    /// `max_gen_toks`) until a stop id, `max_gen_toks` tokens or a stop string; each text is cut
    /// before the first occurrence of each stop string in turn, as the harness does. They run
    /// on herd's serving engine, [`GENERATION_BATCH`] at a time, and a generation is cancelled
    /// as soon as its text holds a stop string. `progress` is told the index of each one that ends.
    pub fn generate_until(
        &self,
        requests: &[Generation],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<String>> {
        let mut prompts = Vec::with_capacity(requests.len());
        for r in requests {
            if r.max_gen_toks >= self.max_length {
                bail!(
                    "max_gen_toks {} must be less than the model's context ({})",
                    r.max_gen_toks,
                    self.max_length
                );
            }
            let mut ids = self.encode(r.context)?;
            let room = self.max_length - r.max_gen_toks;
            if ids.len() > room {
                ids.drain(..ids.len() - room);
            }
            prompts.push(ids);
        }
        let context = prompts
            .iter()
            .zip(requests)
            .map(|(p, r)| p.len() + r.max_gen_toks)
            .max()
            .unwrap_or(1);
        let engine = Engine::start(
            self.model.clone(),
            EngineConfig {
                max_running: GENERATION_BATCH,
                context,
                max_waiting: requests.len().max(1),
                prefill_tokens_per_step: PREFILL_CHUNK,
            },
        );
        let submit = |prompt: Vec<u32>, r: &Generation| {
            let request = EngineRequest {
                prompt,
                config: GenerateConfig {
                    max_tokens: r.max_gen_toks,
                    sampling: r.sampling.clone(),
                    stop_tokens: self.tokenizer.stop_ids().to_vec(),
                    top_logprobs: 0,
                },
                prompt_logprobs: None,
            };
            engine
                .submit(request)
                .map_err(|e| anyhow::anyhow!("generation refused: {e:?}"))
        };
        // The first prompt is read alone: its full blocks then serve the others' shared start
        // (a few-shot prompt's examples) from the engine's prefix cache.
        let mut prompts = prompts.into_iter();
        let mut receivers = Vec::with_capacity(requests.len());
        let mut first_event = None;
        if let Some(prompt) = prompts.next() {
            let mut rx = submit(prompt, &requests[0])?;
            first_event = rx.blocking_recv();
            receivers.push(Some(rx));
        }
        for (prompt, r) in prompts.zip(&requests[1..]) {
            receivers.push(Some(submit(prompt, r)?));
        }
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
        let mut texts = vec![String::new(); requests.len()];
        let mut decoders: Vec<StreamDecoder> = requests
            .iter()
            .map(|_| StreamDecoder::new(self.tokenizer))
            .collect();
        let mut open = requests.len();
        while open > 0 {
            let mut idle = true;
            for (i, slot) in receivers.iter_mut().enumerate() {
                let Some(rx) = slot else { continue };
                let ended = loop {
                    let buffered = if i == 0 { first_event.take() } else { None };
                    let event = buffered.map_or_else(|| rx.try_recv(), Ok);
                    match event {
                        Ok(Event::Token(t)) => {
                            idle = false;
                            ids[i].push(t.id);
                            if let Some(piece) = decoders[i].push(t.id)? {
                                texts[i].push_str(&piece);
                            }
                            let until = requests[i].until;
                            if until
                                .iter()
                                .any(|u| !u.is_empty() && texts[i].contains(u.as_str()))
                            {
                                break true;
                            }
                        }
                        Ok(Event::Finished(_)) => break true,
                        Ok(Event::Prompt(_)) => {}
                        Ok(Event::Failed(e)) => bail!("generation failed: {e}"),
                        Err(TryRecvError::Empty) => break false,
                        Err(TryRecvError::Disconnected) => bail!("the engine stopped"),
                    }
                };
                if ended {
                    // Dropping the receiver cancels what is left of the generation.
                    *slot = None;
                    open -= 1;
                    progress(i);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        engine.shutdown();
        requests
            .iter()
            .zip(&ids)
            .map(|(r, ids)| {
                let mut text = self.tokenizer.decode(ids)?;
                for u in r.until.iter().filter(|u| !u.is_empty()) {
                    if let Some(at) = text.find(u.as_str()) {
                        text.truncate(at);
                    }
                }
                Ok(text)
            })
            .collect()
    }
}

/// `log p(target)` from a row of logits (f32 as the harness's log-softmax, the sum of
/// exponentials in f64) and whether the target is the first largest logit.
fn score_row(row: &[f32], target: u32) -> (f64, bool) {
    let mut best = 0usize;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    let max = row[best] as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    let logprob = row[target as usize] as f64 - max - sum.ln();
    (logprob, best == target as usize)
}

/// The harness's `get_rolling_token_windows` (context length 1) followed by
/// `make_disjoint_window`: `(context, continuation)` pairs whose continuations cover `tokens`
/// once, each with as much context as the window allows.
pub fn rolling_windows(tokens: &[u32], prefix: u32, max_len: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut windows = Vec::new();
    if tokens.is_empty() {
        return windows;
    }
    let first = max_len.min(tokens.len());
    let mut input: Vec<u32> = vec![prefix];
    input.extend_from_slice(&tokens[..first - 1]);
    windows.push((input, tokens[..first].to_vec()));
    let mut predicted = first;
    while predicted < tokens.len() {
        let pred_len = (tokens.len() - predicted).min(max_len);
        let end = predicted + pred_len;
        let start = end.saturating_sub(max_len + 1);
        windows.push((
            tokens[start..end - 1].to_vec(),
            tokens[end - pred_len..end].to_vec(),
        ));
        predicted += pred_len;
    }
    windows
        .into_iter()
        .map(|(a, b)| {
            // make_disjoint_window: the context is what the continuation does not cover.
            let keep = a.len() - (b.len() - 1);
            (a[..keep].to_vec(), b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::rolling_windows;

    #[test]
    fn rolling_windows_match_the_harness_example() {
        // lm_eval.utils: tokens 0..9, prefix BOS (99), max length 4 — windows predict
        // [0 1 2 3], [4 5 6 7], [8 9] with contexts [BOS], [3], [5 6 7].
        let tokens: Vec<u32> = (0..10).collect();
        let w = rolling_windows(&tokens, 99, 4);
        assert_eq!(
            w,
            vec![
                (vec![99], vec![0, 1, 2, 3]),
                (vec![3], vec![4, 5, 6, 7]),
                (vec![5, 6, 7], vec![8, 9]),
            ]
        );
        assert_eq!(rolling_windows(&[5], 99, 4), vec![(vec![99], vec![5])]);
    }
}
