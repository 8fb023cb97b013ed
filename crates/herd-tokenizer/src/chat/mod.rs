//! Chat formats: the Llama 3.1 dialog format of Meta's `llama_models` (roles, `<|eot_id|>` vs
//! `<|eom_id|>`, built-in and custom tool calls, and parsing tool calls out of generated text),
//! HF Jinja chat templates for models that carry another one (SmolLM2's ChatML), and Llama
//! 3.1's JSON tool prompt for models that carry none.

pub mod llama3;
pub mod python;
pub mod template;
pub mod tool_parse;
pub mod tool_prompt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who speaks in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions and tool definitions.
    System,
    /// The human.
    User,
    /// The model.
    Assistant,
    /// A tool's output (Meta's `tool` role, rendered as `ipython`).
    #[serde(alias = "tool")]
    Ipython,
}

impl Role {
    /// The word written in the message header.
    pub fn header(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Ipython => "ipython",
        }
    }
}

/// Why the model stopped a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `<|eot_id|>`: the turn is over.
    EndOfTurn,
    /// `<|eom_id|>`: the message waits for a tool result.
    EndOfMessage,
    /// The token budget ran out.
    OutOfTokens,
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Caller-chosen id (never rendered into the prompt).
    #[serde(default)]
    pub call_id: String,
    /// `brave_search`, `wolfram_alpha`, `photogen`, `code_interpreter`, or a custom tool's name.
    pub tool_name: String,
    /// The arguments: an object (or, for custom tools, a raw string).
    pub arguments: Value,
}

/// Meta's built-in tools.
pub const BUILTIN_TOOLS: &[&str] = &[
    "brave_search",
    "wolfram_alpha",
    "photogen",
    "code_interpreter",
];

/// One message of a dialog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// The text.
    #[serde(default)]
    pub content: String,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why an assistant message ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
}

impl Message {
    /// A message with text only.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            stop_reason: None,
        }
    }
}

/// How custom tool calls are written into the prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolPromptFormat {
    /// `{"type": "function", "name": …, "parameters": …}` (the default).
    #[default]
    Json,
    /// `<function=name>{…}</function>`.
    FunctionTag,
    /// `[name(key=value, …)]`.
    PythonList,
}

/// The prompt of a chat, ending where the assistant's reply starts: Meta's Llama 3.1 format for
/// the Llama 3 tokenizer, else the model's own Jinja template.
pub fn encode_chat(tokenizer: &crate::Tokenizer, messages: &[Message]) -> crate::Result<Vec<u32>> {
    if tokenizer.is_llama3() {
        return llama3::encode_dialog_prompt(tokenizer, messages, ToolPromptFormat::default());
    }
    let template = tokenizer.chat_template().ok_or_else(|| {
        crate::Error::Other("the tokenizer has no chat template and is not Llama 3's".into())
    })?;
    let bos = tokenizer.token_text(tokenizer.bos_id());
    let eos = tokenizer.token_text(tokenizer.stop_ids().first().copied());
    let text =
        template::render(template, messages, true, &bos, &eos).map_err(crate::Error::Other)?;
    tokenizer.encode(&text, true)
}
