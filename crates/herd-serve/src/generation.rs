//! One choice of a request, from the engine's events to text: generated ids are decoded as they
//! come (a character may span tokens), `stop` strings are looked for across token boundaries —
//! text that could still turn into a stop string is held back until it cannot — and the request
//! is cancelled when its client goes away or it runs past the server's timeout. Chat and
//! completions build their responses from the [`Update`]s this sends.

use std::sync::Arc;
use std::time::Instant;

use herd_infer::engine::{Event, Request, SubmitError};
use herd_infer::score::TokenScore;
use herd_infer::{FinishReason, GeneratedToken};
use herd_tokenizer::StreamDecoder;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::error::ApiError;
use crate::prompt::call_arguments_end;
use crate::state::AppState;

/// What a choice reports as it goes.
#[derive(Debug, Clone)]
pub enum Update {
    /// Scores of the prompt's tokens (when asked for), before any text.
    Prompt(Vec<TokenScore>),
    /// Newly generated text and the tokens that made it.
    Text {
        /// The text.
        text: String,
        /// Its tokens (with log-probabilities).
        tokens: Vec<GeneratedToken>,
    },
    /// The end.
    End(Ending),
    /// The choice failed (timeout, model error, shutdown); nothing follows.
    Error(ApiError),
}

/// How a choice ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    /// `stop` (a stop token or string) or `length` (the budget or the context).
    pub reason: &'static str,
    /// The stop token that ended it, if one did, with its log-probability.
    pub stop: Option<GeneratedToken>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// OpenAI's `usage` for choices that come `n` per prompt: each prompt counted once, every
/// choice's completion.
pub fn usage(endings: &[Option<&Ending>], n: usize) -> serde_json::Value {
    let prompt: usize = endings
        .iter()
        .step_by(n.max(1))
        .flatten()
        .map(|e| e.prompt_tokens)
        .sum();
    let completion: usize = endings.iter().flatten().map(|e| e.completion_tokens).sum();
    serde_json::json!({"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion})
}

/// Queues `request` on the engine, or says why not (503 with `Retry-After` when the queue is
/// full, 400 naming `prompt_param` — the request's field the prompt came from — when the
/// prompt does not fit).
pub fn submit(
    state: &AppState,
    request: Request,
    prompt_param: &str,
) -> Result<UnboundedReceiver<Event>, ApiError> {
    state.engine.submit(request).map_err(|e| match e {
        SubmitError::Busy { .. } => ApiError::busy(e.to_string()),
        SubmitError::TooLong { .. } => ApiError::invalid(e.to_string(), Some(prompt_param)),
        SubmitError::Invalid(message) => ApiError::invalid(message, None),
        SubmitError::Stopped => ApiError::stopping(),
    })
}

/// Queues every choice of a request (all or none: one refused drops those already queued),
/// then drives each on its own task; their updates arrive tagged with the choice's index.
/// `prompt_param` names the field the prompts came from, for errors; `call_opening` is the start
/// of a tool call the prompt opened the reply with (`tool_choice` forcing a call), if any: the
/// reply then ends when the call's arguments close.
pub fn start(
    state: &Arc<AppState>,
    requests: Vec<Request>,
    prompt_param: &str,
    call_opening: Option<&str>,
    stop: &[String],
    arrived: Instant,
) -> Result<UnboundedReceiver<(usize, Update)>, ApiError> {
    if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::stopping());
    }
    let mut queued = Vec::with_capacity(requests.len());
    for request in requests {
        let prompt = request.prompt.len();
        queued.push((prompt, submit(state, request, prompt_param)?));
    }
    let (updates, receiver) = unbounded_channel();
    for (index, (prompt, events)) in queued.into_iter().enumerate() {
        tokio::spawn(drive(
            state.clone(),
            index,
            prompt,
            events,
            Held::new(stop.to_vec(), call_opening.map(str::to_string)),
            arrived,
            updates.clone(),
        ));
    }
    Ok(receiver)
}

/// Runs choice `index` (of a `prompt_tokens`-token prompt) to its end, sending its updates
/// tagged with the index. Stops early — dropping `events`, which cancels the sequence in the
/// engine — when `updates` is closed.
pub async fn drive(
    state: Arc<AppState>,
    index: usize,
    prompt_tokens: usize,
    mut events: UnboundedReceiver<Event>,
    mut held: Held,
    arrived: Instant,
    updates: UnboundedSender<(usize, Update)>,
) {
    let send = |update: Update| updates.send((index, update)).is_ok();
    let deadline = tokio::time::Instant::from_std(arrived + state.settings.timeout);
    let metrics = &state.metrics;
    let mut decoder = Some(StreamDecoder::new(&state.tokenizer));
    let mut undecoded: Vec<GeneratedToken> = Vec::new();
    let mut last_token: Option<Instant> = None;
    let mut generated = 0;
    loop {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                send(Update::Error(ApiError::timeout(
                    state.settings.timeout.as_secs(),
                )));
                return;
            }
            Ok(None) => {
                send(Update::Error(ApiError::stopping()));
                return;
            }
            Ok(Some(event)) => event,
        };
        match event {
            Event::Prompt(scores) => {
                if !send(Update::Prompt(scores)) {
                    return;
                }
            }
            Event::Token(token) => {
                let now = Instant::now();
                match last_token {
                    None => metrics
                        .time_to_first_token
                        .observe((now - arrived).as_secs_f64()),
                    Some(before) => metrics
                        .inter_token_latency
                        .observe((now - before).as_secs_f64()),
                }
                last_token = Some(now);
                generated += 1;
                let id = token.id;
                undecoded.push(token);
                let piece = match decoder.as_mut().map(|d| d.push(id)) {
                    Some(Ok(piece)) => piece,
                    Some(Err(e)) => {
                        send(Update::Error(ApiError::internal(format!(
                            "the model produced token {id}, which the tokenizer cannot decode: \
                             {e}"
                        ))));
                        return;
                    }
                    None => None,
                };
                if let Some(piece) = piece {
                    held.pieces.push((piece, std::mem::take(&mut undecoded)));
                }
                let (text, tokens, stopped) = held.release(false);
                if (!text.is_empty() || !tokens.is_empty()) && !send(Update::Text { text, tokens })
                {
                    return;
                }
                if stopped {
                    // A stop string, or a forced call's end: the rest is not wanted (dropping
                    // `events` cancels it).
                    metrics.prompt_tokens.inc_by(prompt_tokens as u64);
                    metrics.generated_tokens.inc_by(generated as u64);
                    send(Update::End(Ending {
                        reason: "stop",
                        stop: None,
                        prompt_tokens,
                        completion_tokens: generated,
                    }));
                    return;
                }
            }
            Event::Finished(finished) => {
                if finished.finish == FinishReason::Cancelled {
                    send(Update::Error(ApiError::stopping()));
                    return;
                }
                let rest = decoder
                    .take()
                    .map(|d| d.finish().unwrap_or_default())
                    .unwrap_or_default();
                if !rest.is_empty() || !undecoded.is_empty() {
                    held.pieces.push((rest, std::mem::take(&mut undecoded)));
                }
                let (text, tokens, stopped) = held.release(true);
                if (!text.is_empty() || !tokens.is_empty()) && !send(Update::Text { text, tokens })
                {
                    return;
                }
                metrics.prompt_tokens.inc_by(finished.prompt_tokens as u64);
                metrics
                    .generated_tokens
                    .inc_by(finished.completion_tokens as u64);
                let reason = match finished.finish {
                    _ if stopped => "stop",
                    FinishReason::Stop => "stop",
                    _ => "length",
                };
                send(Update::End(Ending {
                    reason,
                    stop: finished.stop,
                    prompt_tokens: finished.prompt_tokens,
                    completion_tokens: finished.completion_tokens,
                }));
                return;
            }
            Event::Failed(message) => {
                send(Update::Error(ApiError::internal(format!(
                    "the model failed: {message}"
                ))));
                return;
            }
        }
    }
}

/// Decoded text not yet sent, in the pieces the decoder gave (each with its tokens).
pub struct Held {
    stop: Vec<String>,
    /// The opening of a forced tool call, and the reply's text sent so far.
    call: Option<(String, String)>,
    pieces: Vec<(String, Vec<GeneratedToken>)>,
}

impl Held {
    /// Nothing held yet, for a reply cut at `stop` strings and, when it was opened as a call
    /// (`call_opening`), where the call's arguments close.
    fn new(stop: Vec<String>, call_opening: Option<String>) -> Held {
        Held {
            stop,
            call: call_opening.map(|opening| (opening, String::new())),
            pieces: Vec::new(),
        }
    }

    /// Takes what can be sent: everything up to a stop string or the end of a forced call's
    /// arguments (then `true`; the call is closed with its `}`), or (unless `all`) all but the
    /// pieces that might be the start of a stop string.
    fn release(&mut self, all: bool) -> (String, Vec<GeneratedToken>, bool) {
        let text: String = self.pieces.iter().map(|(p, _)| p.as_str()).collect();
        let call_end = self.call.as_ref().and_then(|(opening, sent)| {
            let before = opening.len() + sent.len();
            let end = call_arguments_end(&format!("{opening}{sent}{text}"))?;
            (end > before).then(|| end - before)
        });
        let stop_cut = self.stop.iter().filter_map(|s| text.find(s.as_str())).min();
        let cut = stop_cut.into_iter().chain(call_end).min();
        let limit = match cut {
            Some(cut) => cut,
            None if all => text.len(),
            None => text.len() - self.possible_stop_start(&text),
        };
        let (mut out, mut tokens) = (String::new(), Vec::new());
        let mut taken = 0;
        for (piece, piece_tokens) in &self.pieces {
            if out.len() + piece.len() > limit {
                break;
            }
            out.push_str(piece);
            tokens.extend(piece_tokens.iter().cloned());
            taken += 1;
        }
        self.pieces.drain(..taken);
        if cut.is_some() {
            // The text up to the stop string (a piece that straddles it gives its head only).
            out = text[..limit].to_string();
            self.pieces.clear();
            if cut == call_end {
                out.push('}');
            }
        }
        if let Some((_, sent)) = &mut self.call {
            sent.push_str(&out);
        }
        (out, tokens, cut.is_some())
    }

    /// Bytes at the end of `text` that begin some stop string.
    fn possible_stop_start(&self, text: &str) -> usize {
        self.stop
            .iter()
            .flat_map(|s| {
                s.char_indices()
                    .skip(1)
                    .map(|(i, _)| i)
                    .filter(|&i| text.ends_with(&s[..i]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u32) -> GeneratedToken {
        GeneratedToken {
            id,
            logprob: -1.0,
            top: Vec::new(),
        }
    }

    fn held(stop: &[String], pieces: &[&str]) -> Held {
        Held {
            stop: stop.to_vec(),
            call: None,
            pieces: pieces
                .iter()
                .enumerate()
                .map(|(i, p)| (p.to_string(), vec![token(i as u32)]))
                .collect(),
        }
    }

    #[test]
    fn text_that_may_start_a_stop_string_waits() {
        let stop = vec!["\n\nQ:".to_string()];
        let mut h = held(&stop, &["The answer", " is 4", ".\n"]);
        let (text, tokens, stopped) = h.release(false);
        assert_eq!(
            (text.as_str(), tokens.len(), stopped),
            ("The answer is 4", 2, false)
        );
        // The held "\n" turns out not to start "\n\nQ:".
        h.pieces.push(("\nA".into(), vec![token(9)]));
        let (text, _, stopped) = h.release(false);
        assert_eq!((text.as_str(), stopped), (".\n\nA", false));
    }

    #[test]
    fn a_stop_string_across_pieces_ends_the_text_before_it() {
        let stop = vec!["STOP".to_string(), "###".to_string()];
        let mut h = held(&stop, &["one two S", "TO", "P three"]);
        let (text, tokens, stopped) = h.release(false);
        assert_eq!((text.as_str(), stopped), ("one two ", true));
        assert!(
            tokens.is_empty(),
            "the straddling piece's token is not reported"
        );
        let mut h = held(&stop, &["a", "b", "##", "#c"]);
        let (text, tokens, stopped) = h.release(true);
        let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
        assert_eq!((text.as_str(), ids, stopped), ("ab", vec![0, 1], true));
    }

    #[test]
    fn without_stop_strings_everything_goes_at_once() {
        let stop: Vec<String> = Vec::new();
        let mut h = held(&stop, &["x", "y"]);
        assert_eq!(h.release(false).0, "xy");
        assert!(h.pieces.is_empty());
    }
}
