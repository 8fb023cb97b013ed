//! `herd chat`: a multi-turn conversation. Each stdin line is a user turn; the KV cache is kept
//! between turns so only the new messages are processed.

use std::io::{BufRead, Write};

use anyhow::Result;
use herd_infer::{GenerateConfig, Session};
use herd_tokenizer::chat::{encode_chat, Message, Role};
use herd_tokenizer::StreamDecoder;

use super::{ModelArgs, SamplingArgs};

/// Flags of `herd chat`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Type a message and press Enter. Commands: /reset forgets the conversation, /exit (or Ctrl-D) quits."
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, short = 'n', default_value_t = 512)]
    max_tokens: usize,
    /// Context size (tokens) of the conversation (at most the model's).
    #[arg(long, default_value_t = 4096, value_parser = super::values::count)]
    context: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// Runs `herd chat`.
pub fn run(args: Args) -> Result<()> {
    let loaded = args.model.load()?;
    let tokenizer = &loaded.tokenizer;
    let context = args.context.min(loaded.model.config().max_seq_len);
    let mut session = Session::new(&loaded.model, context);
    let start: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new(Role::System, s.clone()))
        .collect();
    let mut messages = start.clone();
    let config = GenerateConfig {
        max_tokens: args.max_tokens,
        sampling: args.sampling.config(),
        stop_tokens: tokenizer.stop_ids().to_vec(),
        top_logprobs: 0,
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!(
        "herd chat: {} ({:?}). /reset to start over, /exit to quit.",
        args.model.model.display(),
        loaded.format
    );
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = start.clone();
                eprintln!("(conversation cleared)");
                continue;
            }
            text => messages.push(Message::new(Role::User, text)),
        }
        let prompt = encode_chat(tokenizer, &messages)?;
        if prompt.len() + 1 >= context {
            eprintln!(
                "(the conversation fills the {context}-token context: /reset, or raise --context)"
            );
            messages.pop();
            continue;
        }
        let mut stream = StreamDecoder::new(tokenizer);
        let generation = session.generate(&prompt, &config, |token| {
            if let Some(text) = stream.push(token.id)? {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            Ok(true)
        })?;
        writeln!(stdout, "{}", stream.finish()?)?;
        let ids: Vec<u32> = generation.tokens.iter().map(|t| t.id).collect();
        messages.push(Message::new(Role::Assistant, tokenizer.decode(&ids)?));
        eprintln!(
            "[{} tokens, {:.1} tok/s]",
            ids.len(),
            ids.len() as f64 / generation.decode_seconds.max(1e-9)
        );
    }
    Ok(())
}
