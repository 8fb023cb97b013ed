//! Post-training data sets: files of conversations or preferences read into examples (bad
//! records counted with their place and reason), tokenized with their loss masks, and split
//! into training and held-out parts by prompt, so no prompt is on both sides.

use std::path::PathBuf;

use herd_data::reader::{input_files, read_records};
use herd_model::seeded::fnv1a64;
use herd_tokenizer::chat::{Message, ToolPromptFormat};
use herd_tokenizer::Tokenizer;

use crate::conversation::{parse_record, Example, Format, Preference};
use crate::error::{Error, Result};
use crate::masks::{dpo_example, sft_example, Masked};

/// A record that could not be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// `file:line` or `file#index`.
    pub at: String,
    /// The reason.
    pub reason: String,
}

/// The examples of some files.
#[derive(Debug, Default)]
pub struct Examples {
    /// Conversations ending with an assistant reply.
    pub dialogs: Vec<Vec<Message>>,
    /// Ranked replies.
    pub preferences: Vec<Preference>,
    /// Records not read.
    pub rejected: Vec<Rejected>,
}

impl Examples {
    /// Reads every record of `inputs` (files or folders of `.json`/`.jsonl`, gzipped or not).
    pub fn read(inputs: &[PathBuf], format: Format) -> Result<Examples> {
        let mut out = Examples::default();
        for file in input_files(inputs)? {
            let mut bad = Vec::new();
            read_records(&file, &mut bad, &mut |record| {
                match parse_record(&record.value, format) {
                    Ok(Example::Dialog(d)) => out.dialogs.push(d),
                    Ok(Example::Preference(p)) => out.preferences.push(p),
                    Err(reason) => out.rejected.push(Rejected {
                        at: record.at,
                        reason,
                    }),
                }
                Ok(())
            })?;
            out.rejected.extend(bad.into_iter().map(|b| Rejected {
                at: b.at,
                reason: b.reason,
            }));
        }
        Ok(out)
    }

    /// A one-paragraph account for the user: what was read, and the first bad records.
    pub fn report(&self) -> String {
        let mut text = format!(
            "{} conversations, {} preference records, {} records skipped",
            self.dialogs.len(),
            self.preferences.len(),
            self.rejected.len()
        );
        for r in self.rejected.iter().take(5) {
            text += &format!("\n  skipped {}: {}", r.at, r.reason);
        }
        if self.rejected.len() > 5 {
            text += &format!("\n  … and {} more", self.rejected.len() - 5);
        }
        text
    }
}

/// Whether a prompt is held out: a hash of its text against `fraction`, so a prompt falls on
/// the same side in every run and every stage.
pub fn is_held_out(prompt: &[Message], fraction: f64) -> bool {
    let mut text = String::new();
    for m in prompt {
        text.push_str(&m.content);
        text.push('\u{1}');
    }
    (fnv1a64(text.as_bytes()) % 1_000_000) as f64 / 1e6 < fraction
}

/// The user side of a conversation: everything before its last assistant reply.
pub fn prompt_of(dialog: &[Message]) -> &[Message] {
    &dialog[..dialog.len().saturating_sub(1)]
}

/// A preference pair in token ids: the prompt, then the better and the worse reply (content
/// carries loss; the end token is kept but carries none).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPair {
    /// The prompt, ending with the assistant header.
    pub prompt: Vec<u32>,
    /// The better reply.
    pub chosen: Masked,
    /// The worse reply.
    pub rejected: Masked,
}

impl TokenPair {
    /// Prompt followed by `reply`, the prompt carrying no loss.
    pub fn sequence(&self, reply: &Masked) -> Masked {
        let mut ids = self.prompt.clone();
        ids.extend_from_slice(&reply.ids);
        let mut loss = vec![false; self.prompt.len()];
        loss.extend_from_slice(&reply.loss);
        Masked { ids, loss }
    }
}

/// Every pair of every preference (edited > chosen > rejected gives three), in token ids.
pub fn token_pairs(
    tokenizer: &Tokenizer,
    preferences: &[Preference],
    format: ToolPromptFormat,
) -> Result<Vec<TokenPair>> {
    let mut out = Vec::new();
    for p in preferences {
        for (better, worse) in p.pairs() {
            let pair = Preference {
                prompt: p.prompt.clone(),
                chosen: better.clone(),
                rejected: worse.clone(),
                edited: None,
            };
            let (prompt, chosen, rejected) = dpo_example(tokenizer, &pair, format)?;
            out.push(TokenPair {
                prompt,
                chosen,
                rejected,
            });
        }
    }
    Ok(out)
}

/// SFT sequences of `dialogs`.
pub fn token_dialogs(
    tokenizer: &Tokenizer,
    dialogs: &[Vec<Message>],
    format: ToolPromptFormat,
) -> Result<Vec<Masked>> {
    dialogs
        .iter()
        .map(|d| sft_example(tokenizer, d, format).map_err(Error::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_tokenizer::chat::Role;

    #[test]
    fn held_out_share_follows_the_fraction_and_is_stable() {
        let prompts: Vec<Vec<Message>> = (0..5000)
            .map(|i| vec![Message::new(Role::User, format!("question {i}"))])
            .collect();
        let held = prompts.iter().filter(|p| is_held_out(p, 0.1)).count();
        assert!((400..600).contains(&held), "{held}");
        assert!(prompts
            .iter()
            .all(|p| is_held_out(p, 0.1) == is_held_out(p, 0.1)));
        assert!(!prompts.iter().any(|p| is_held_out(p, 0.0)));
    }
}
