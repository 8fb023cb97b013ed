//! Llama 3.1 dialogs, token for token as `llama_models` 0.3's `ChatFormat`:
//! `<|begin_of_text|>`, then per message `<|start_header_id|>role<|end_header_id|>\n\n`, the
//! content, any tool calls, and `<|eom_id|>` (assistant waiting for a tool) or `<|eot_id|>`; the
//! prompt ends with the assistant header. Every piece is tokenized on its own with special-token
//! text treated as plain text, so nothing a user writes can forge a header.

use crate::chat::python::{json_dumps, python_list_value};
use crate::chat::{Message, Role, StopReason, ToolCall, ToolPromptFormat, BUILTIN_TOOLS};
use crate::error::Result;
use crate::llama3::special;
use crate::tokenizer::Tokenizer;

/// The text of a tool call as it is written into an assistant message.
pub fn encode_tool_call(call: &ToolCall, format: ToolPromptFormat) -> String {
    let arg = |key: &str| {
        call.arguments
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    match call.tool_name.as_str() {
        "brave_search" | "wolfram_alpha" | "photogen" => {
            format!("{}.call(query=\"{}\")", call.tool_name, arg("query"))
        }
        "code_interpreter" => arg("code"),
        name => match format {
            ToolPromptFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("type".into(), "function".into());
                object.insert("name".into(), name.into());
                object.insert("parameters".into(), call.arguments.clone());
                json_dumps(&serde_json::Value::Object(object))
            }
            ToolPromptFormat::FunctionTag => format!(
                "<function={name}>{}</function>",
                json_dumps(&call.arguments)
            ),
            ToolPromptFormat::PythonList => {
                let args = match &call.arguments {
                    serde_json::Value::Object(map) => map
                        .iter()
                        .map(|(k, v)| format!("{k}={}", python_list_value(v)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => python_list_value(other),
                };
                format!("[{name}({args})]")
            }
        },
    }
}

/// The id of one of Llama 3's special tokens in `tokenizer`'s vocabulary.
pub fn special_id(tokenizer: &Tokenizer, name: &str) -> Result<u32> {
    tokenizer.token_id(name).ok_or_else(|| {
        crate::Error::Other(format!(
            "the tokenizer has no {name} token: the Llama 3 chat format needs Meta's special tokens"
        ))
    })
}

/// `<|start_header_id|>role<|end_header_id|>\n\n`.
pub fn encode_header(tokenizer: &Tokenizer, role: Role) -> Result<Vec<u32>> {
    let mut ids = vec![special_id(tokenizer, special::START_HEADER)?];
    ids.extend(tokenizer.encode(role.header(), false)?);
    ids.push(special_id(tokenizer, special::END_HEADER)?);
    ids.extend(tokenizer.encode("\n\n", false)?);
    Ok(ids)
}

/// One message: header, content, tool calls, end token.
pub fn encode_message(
    tokenizer: &Tokenizer,
    message: &Message,
    format: ToolPromptFormat,
) -> Result<Vec<u32>> {
    let mut ids = encode_header(tokenizer, message.role)?;
    let assistant = message.role == Role::Assistant;
    if assistant
        && message
            .tool_calls
            .first()
            .is_some_and(|c| c.tool_name == "code_interpreter")
    {
        ids.push(special_id(tokenizer, special::PYTHON_TAG)?);
    }
    ids.extend(tokenizer.encode(&message.content, false)?);
    if assistant {
        for call in &message.tool_calls {
            ids.extend(tokenizer.encode(&encode_tool_call(call, format), false)?);
        }
    }
    let waits_for_tool = assistant && message.stop_reason == Some(StopReason::EndOfMessage);
    let end = if waits_for_tool {
        special::EOM
    } else {
        special::EOT
    };
    ids.push(special_id(tokenizer, end)?);
    Ok(ids)
}

/// A whole dialog as the model's prompt, ending with the assistant header.
pub fn encode_dialog_prompt(
    tokenizer: &Tokenizer,
    messages: &[Message],
    format: ToolPromptFormat,
) -> Result<Vec<u32>> {
    let mut ids = vec![special_id(tokenizer, special::BEGIN_OF_TEXT)?];
    for message in messages {
        ids.extend(encode_message(tokenizer, message, format)?);
    }
    ids.extend(encode_header(tokenizer, Role::Assistant)?);
    Ok(ids)
}

/// Whether a tool name is one of Meta's built-ins.
pub fn is_builtin(name: &str) -> bool {
    BUILTIN_TOOLS.contains(&name)
}
