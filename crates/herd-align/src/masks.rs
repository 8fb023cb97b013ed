//! Dialogs and preference pairs as Llama 3.1 token ids (`llama_models`' `ChatFormat`, token for
//! token) with the loss masks of post-training:
//!
//! - **SFT** trains on what the assistant writes: the content of every assistant message and
//!   the `<|eot_id|>`/`<|eom_id|>` that ends it (the model must learn to stop), not the
//!   `<|begin_of_text|>`, the headers, nor any system, user or tool message.
//! - **DPO** (paper §4.1.4) compares the responses without the formatting tokens: the header
//!   and the end token are masked out of both chosen and rejected log-probabilities.

use herd_tokenizer::chat::llama3::{encode_header, encode_message, special_id};
use herd_tokenizer::chat::{Message, Role, ToolPromptFormat};
use herd_tokenizer::llama3::special;
use herd_tokenizer::{Result, Tokenizer};

use crate::conversation::Preference;

/// Token ids and, per token, whether it carries loss (as a target).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Masked {
    /// The ids.
    pub ids: Vec<u32>,
    /// `loss[i]`: token `i` is predicted with loss.
    pub loss: Vec<bool>,
}

impl Masked {
    fn push(&mut self, ids: &[u32], loss: bool) {
        self.ids.extend_from_slice(ids);
        self.loss.extend(std::iter::repeat_n(loss, ids.len()));
    }

    /// The ids that carry loss.
    pub fn loss_ids(&self) -> Vec<u32> {
        self.ids
            .iter()
            .zip(&self.loss)
            .filter(|(_, &l)| l)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// A whole dialog for SFT: every assistant message's content and end token carry loss.
pub fn sft_example(
    tokenizer: &Tokenizer,
    messages: &[Message],
    format: ToolPromptFormat,
) -> Result<Masked> {
    let mut out = Masked::default();
    out.push(&[special_id(tokenizer, special::BEGIN_OF_TEXT)?], false);
    for message in messages {
        let ids = encode_message(tokenizer, message, format)?;
        if message.role == Role::Assistant {
            let header = encode_header(tokenizer, message.role)?.len();
            out.push(&ids[..header], false);
            out.push(&ids[header..], true);
        } else {
            out.push(&ids, false);
        }
    }
    Ok(out)
}

/// The prompt of a preference pair (ending with the assistant header) and each reply, whose
/// content carries loss but whose end token does not.
pub fn dpo_example(
    tokenizer: &Tokenizer,
    pair: &Preference,
    format: ToolPromptFormat,
) -> Result<(Vec<u32>, Masked, Masked)> {
    let prompt =
        herd_tokenizer::chat::llama3::encode_dialog_prompt(tokenizer, &pair.prompt, format)?;
    let header = encode_header(tokenizer, Role::Assistant)?.len();
    let reply = |message: &Message| -> Result<Masked> {
        let ids = encode_message(tokenizer, message, format)?;
        let mut out = Masked::default();
        out.push(&ids[header..ids.len() - 1], true);
        out.push(&ids[ids.len() - 1..], false);
        Ok(out)
    };
    Ok((prompt, reply(&pair.chosen)?, reply(&pair.rejected)?))
}
