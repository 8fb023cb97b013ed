//! `herd generate`: continue a prompt, streaming the text, or print tokens with log-probs.

use std::io::Write;

use anyhow::Result;
use herd_infer::{GenerateConfig, Session};
use herd_tokenizer::chat::{encode_chat, Message, Role};
use herd_tokenizer::StreamDecoder;
use serde_json::json;

use super::{read_stdin, ModelArgs, SamplingArgs};

/// Flags of `herd generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (read from stdin when absent).
    #[arg(long, short)]
    prompt: Option<String>,
    /// Wrap the prompt as a user message in the model's chat format.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Treat special-token text in the prompt (e.g. `<|eot_id|>`) as special tokens.
    #[arg(long)]
    allow_special: bool,
    /// Print JSON: generated ids with their log-probabilities and top alternatives.
    #[arg(long)]
    json: bool,
    /// Alternatives per token in --json output.
    #[arg(long, default_value_t = 5)]
    top_logprobs: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// Runs `herd generate`.
pub fn run(args: Args) -> Result<()> {
    let loaded = args.model.load()?;
    let tokenizer = &loaded.tokenizer;
    let prompt = match args.prompt {
        Some(p) => p,
        None => read_stdin()?,
    };
    let ids = if args.chat {
        let mut messages: Vec<Message> = args
            .system
            .iter()
            .map(|s| Message::new(Role::System, s.clone()))
            .collect();
        messages.push(Message::new(Role::User, prompt));
        encode_chat(tokenizer, &messages)?
    } else {
        tokenizer.encode_prompt(&prompt, args.allow_special)?
    };
    let config = GenerateConfig {
        max_tokens: args.max_tokens,
        sampling: args.sampling.config(),
        stop_tokens: tokenizer.stop_ids().to_vec(),
        top_logprobs: if args.json { args.top_logprobs } else { 0 },
    };
    let capacity = (ids.len() + args.max_tokens).min(loaded.model.config().max_seq_len);
    let mut session = Session::new(&loaded.model, capacity);
    let mut stream = StreamDecoder::new(tokenizer);
    let mut stdout = std::io::stdout().lock();
    let generation = session.generate(&ids, &config, |token| {
        if !args.json {
            if let Some(text) = stream.push(token.id)? {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
        }
        Ok(true)
    })?;
    let text_of = |id: u32| tokenizer.decode(&[id]).unwrap_or_default();
    if args.json {
        let tokens: Vec<_> = generation
            .tokens
            .iter()
            .map(|t| {
                let top: Vec<_> = t.top.iter().map(|&(id, lp)| json!({"id": id, "text": text_of(id), "logprob": lp})).collect();
                json!({"id": t.id, "text": text_of(t.id), "logprob": t.logprob, "top_logprobs": top})
            })
            .collect();
        let ids_out: Vec<u32> = generation.tokens.iter().map(|t| t.id).collect();
        let out = json!({
            "prompt_ids": ids,
            "text": tokenizer.decode(&ids_out)?,
            "tokens": tokens,
            "finish_reason": generation.finish,
            "stop_token": generation.stop_token,
        });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        writeln!(stdout, "{}", stream.finish()?)?;
    }
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    eprintln!(
        "[prompt {} tokens, {:.1} tok/s | generated {} tokens, {:.1} tok/s | {:?}]",
        generation.prompt_tokens,
        rate(generation.prompt_tokens, generation.prompt_seconds),
        generation.tokens.len(),
        rate(generation.tokens.len(), generation.decode_seconds),
        generation.finish
    );
    Ok(())
}
