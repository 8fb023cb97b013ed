//! Post-training data sets: files of conversations or preferences read into examples (bad
//! records counted with their place and reason), tokenized with their loss masks, and split
//! into training and held-out parts by prompt, so no prompt is on both sides.

use std::path::PathBuf;

use herd_tokenizer::chat::{Message, ToolPromptFormat};
use herd_tokenizer::Tokenizer;
use herd_util::fs::list_files;
use herd_util::records::{is_json_data, read_records, BadRecord};
use herd_util::seeded::fnv1a64;

use crate::conversation::{parse_record, Example, Format, Preference};
use crate::error::{Error, Result};
use crate::masks::{dpo_example, sft_example, Masked};

/// The examples of some files.
#[derive(Debug, Default)]
pub struct Examples {
    /// Conversations ending with an assistant reply.
    pub dialogs: Vec<Vec<Message>>,
    /// Ranked replies.
    pub preferences: Vec<Preference>,
    /// Records not read.
    pub rejected: Vec<BadRecord>,
}

impl Examples {
    /// Reads every record of `inputs` (files or folders of `.json`/`.jsonl`, gzipped or not).
    pub fn read(inputs: &[PathBuf], format: Format) -> Result<Examples> {
        let mut out = Examples::default();
        for file in list_files(inputs, &is_json_data)? {
            let mut bad = Vec::new();
            read_records::<Error>(&file, &mut bad, &mut |record| {
                match parse_record(&record.value, format) {
                    Ok(Example::Dialog(d)) => out.dialogs.push(d),
                    Ok(Example::Preference(p)) => out.preferences.push(p),
                    Err(reason) => out.rejected.push(BadRecord {
                        at: record.at,
                        reason,
                    }),
                }
                Ok(())
            })?;
            out.rejected.append(&mut bad);
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
        // Raising the fraction only moves prompts to the held-out side.
        let wider = prompts.iter().filter(|p| is_held_out(p, 0.2)).count();
        assert!(prompts
            .iter()
            .all(|p| !is_held_out(p, 0.1) || is_held_out(p, 0.2)));
        assert!((900..1100).contains(&wider), "{wider}");
        // A decision depends on the prompt's text alone: rebuilt from scratch, the same side.
        let rebuilt: Vec<bool> = (0..5000)
            .rev()
            .map(|i| is_held_out(&[Message::new(Role::User, format!("question {i}"))], 0.1))
            .collect();
        let original: Vec<bool> = prompts.iter().rev().map(|p| is_held_out(p, 0.1)).collect();
        assert_eq!(rebuilt, original);
        assert!(!prompts.iter().any(|p| is_held_out(p, 0.0)));
        assert!(prompts.iter().all(|p| is_held_out(p, 1.0)));
    }
}
