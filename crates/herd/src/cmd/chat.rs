//! `herd chat`: a multi-turn conversation. Each line typed is a user turn; the KV cache is kept
//! between turns so only the new messages are processed. Lines are edited with rustyline
//! (arrows, history across sessions in `~/.cache/herd/chat-history`); Ctrl-C stops a reply and
//! returns to the prompt with the conversation kept, and at the prompt clears the line; Ctrl-D
//! (or `/exit`) ends the session.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use herd_infer::{GenerateConfig, Session};
use herd_tokenizer::chat::{encode_chat, Message, Role};
use herd_tokenizer::StreamDecoder;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use super::{ModelArgs, SamplingArgs};

/// Flags of `herd chat`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Type a message and press Enter (arrows edit it and walk the history). Ctrl-C stops a reply \
                  and keeps the conversation; /reset forgets the conversation; /exit or Ctrl-D quits."
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

/// Where the line history is kept between sessions.
fn history_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/herd/chat-history"))
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
    // Ctrl-C while a reply is written: stop it, not the session. (At the prompt the editor
    // reads Ctrl-C as a key.)
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot catch Ctrl-C")?;
    let mut editor = DefaultEditor::new().context("cannot set up line editing")?;
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut stdout = std::io::stdout();
    eprintln!(
        "herd chat: {} ({:?}). /reset to start over, /exit or Ctrl-D to quit; Ctrl-C stops a reply.",
        args.model.model.display(),
        loaded.format
    );
    loop {
        let line = match editor.readline("> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                eprintln!("(Ctrl-D or /exit to quit)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading the next message"),
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = start.clone();
                eprintln!("(conversation cleared)");
                continue;
            }
            text => {
                let _ = editor.add_history_entry(text);
                messages.push(Message::new(Role::User, text));
            }
        }
        let prompt = encode_chat(tokenizer, &messages)?;
        if prompt.len() + 1 >= context {
            eprintln!(
                "(the conversation fills the {context}-token context: /reset, or raise --context)"
            );
            messages.pop();
            continue;
        }
        interrupted.store(false, Ordering::SeqCst);
        let mut stream = StreamDecoder::new(tokenizer);
        let generation = session.generate(&prompt, &config, |token| {
            if let Some(text) = stream.push(token.id)? {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            Ok(!interrupted.load(Ordering::SeqCst))
        })?;
        writeln!(stdout, "{}", stream.finish()?)?;
        let ids: Vec<u32> = generation.tokens.iter().map(|t| t.id).collect();
        // A reply cut short stays in the conversation as far as it went.
        messages.push(Message::new(Role::Assistant, tokenizer.decode(&ids)?));
        let stopped = if interrupted.swap(false, Ordering::SeqCst) {
            ", stopped"
        } else {
            ""
        };
        eprintln!(
            "[{} tokens, {:.1} tok/s{stopped}]",
            ids.len(),
            ids.len() as f64 / generation.decode_seconds.max(1e-9)
        );
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}
