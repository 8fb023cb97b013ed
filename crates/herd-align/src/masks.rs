//! Dialogs and preference pairs as Llama 3.1 token ids (`llama_models`' `ChatFormat`, token for
//! token) with the loss masks of post-training:
//!
//! - **SFT** trains on what the assistant writes: the content of every assistant message and
//!   the `<|eot_id|>`/`<|eom_id|>` that ends it (the model must learn to stop), not the
//!   `<|begin_of_text|>`, the headers, nor any system, user or tool message.
//! - **DPO** (paper §4.1.4) compares the responses without the formatting tokens: the header
//!   and the end token are masked out of both chosen and rejected log-probabilities.
//!
//! A model with another chat template (SmolLM2's ChatML) gets the same masks from its Jinja
//! template: the text a reply adds to the rendered conversation, after the template's own
//! assistant header, up to and including the first end-of-turn token, is the reply; what
//! follows that token (ChatML's newline) is formatting.

use herd_tokenizer::chat::llama3::{encode_header, encode_message, special_id};
use herd_tokenizer::chat::template::ChatTemplate;
use herd_tokenizer::chat::{Message, Role, ToolPromptFormat};
use herd_tokenizer::llama3::special;
use herd_tokenizer::{Error, Result, Tokenizer};

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
    if !tokenizer.is_llama3() {
        return Ok(TemplateChat::new(tokenizer)?
            .dialog(messages, Reply::Sft)?
            .0);
    }
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
    if !tokenizer.is_llama3() {
        let chat = TemplateChat::new(tokenizer)?;
        let reply = |m: &Message| -> Result<(Vec<u32>, Masked)> {
            let mut dialog = pair.prompt.clone();
            dialog.push(m.clone());
            let (all, reply_start) = chat.dialog(&dialog, Reply::Dpo)?;
            let prompt = all.ids[..reply_start].to_vec();
            let reply = Masked {
                ids: all.ids[reply_start..].to_vec(),
                loss: all.loss[reply_start..].to_vec(),
            };
            Ok((prompt, reply))
        };
        let (prompt, chosen) = reply(&pair.chosen)?;
        let (_, rejected) = reply(&pair.rejected)?;
        return Ok((prompt, chosen, rejected));
    }
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

/// Which reply tokens carry loss with a Jinja template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Content and the end-of-turn token.
    Sft,
    /// Content only.
    Dpo,
}

/// A model's own chat template, rendered and tokenized piece by piece.
struct TemplateChat<'t> {
    tokenizer: &'t Tokenizer,
    template: ChatTemplate,
    bos: String,
    eos: String,
}

impl<'t> TemplateChat<'t> {
    fn new(tokenizer: &'t Tokenizer) -> Result<TemplateChat<'t>> {
        let template = tokenizer.chat_template().ok_or_else(|| {
            Error::Other("the tokenizer has no chat template and is not Llama 3's".into())
        })?;
        Ok(TemplateChat {
            tokenizer,
            template: ChatTemplate::new(template).map_err(Error::Other)?,
            bos: tokenizer.token_text(tokenizer.bos_id()),
            eos: tokenizer.token_text(tokenizer.stop_ids().first().copied()),
        })
    }

    fn render(&self, messages: &[Message], open_reply: bool) -> Result<String> {
        self.template
            .render(messages, open_reply, &self.bos, &self.eos)
            .map_err(Error::Other)
    }

    /// The dialog's ids with `reply` masks on every assistant message, and where the last
    /// assistant reply starts.
    fn dialog(&self, messages: &[Message], reply: Reply) -> Result<(Masked, usize)> {
        let mut out = Masked::default();
        let mut done = String::new();
        let mut last_reply = 0;
        for (i, message) in messages.iter().enumerate() {
            if message.role != Role::Assistant {
                continue;
            }
            let head = self.render(&messages[..i], true)?;
            let full = self.render(&messages[..=i], false)?;
            let (Some(context), Some(text)) = (head.strip_prefix(&done), full.strip_prefix(&head))
            else {
                return Err(Error::Other(
                    "the chat template does not render a conversation as a prefix of its continuation"
                        .into(),
                ));
            };
            out.push(&self.tokenizer.encode(context, true)?, false);
            last_reply = out.ids.len();
            let ids = self.tokenizer.encode(text, true)?;
            let stop = self.tokenizer.stop_ids();
            let end = ids.iter().position(|id| stop.contains(id));
            let loss_end = match (end, reply) {
                (Some(e), Reply::Sft) => e + 1,
                (Some(e), Reply::Dpo) => e,
                (None, _) => ids.len(),
            };
            out.push(&ids[..loss_end], true);
            out.push(&ids[loss_end..], false);
            done = full;
        }
        let rest = self.render(messages, false)?;
        if let Some(tail) = rest.strip_prefix(&done).filter(|t| !t.is_empty()) {
            out.push(&self.tokenizer.encode(tail, true)?, false);
        }
        Ok((out, last_reply))
    }
}
