//! Llama 3.1's JSON custom-tool prompt for models that carry no chat template (herd's own Llama 3
//! models, Meta checkpoints): the prompt Llama 3.1 Instruct's published chat template writes
//! when it is given `tools` — what transformers, vLLM and llama.cpp send a Llama 3.1 model —
//! produced here without a template, so a template-less model answers OpenAI `tools` the way
//! Llama 3.1 was trained to.
//!
//! The system turn says `Environment: ipython` and the knowledge and today dates (the
//! template's default date, 26 Jul 2024), then the system message; the first user message is
//! prefixed by the instruction to answer with `{"name": …, "parameters": …}` and every tool as
//! indented JSON; an assistant turn that called a tool is that JSON object; a tool result is an
//! `ipython` turn holding the result as a JSON string. Messages and tools come in OpenAI's
//! shape (`role`, `content`, `tool_calls` with object `arguments`). Checked text for text
//! against the template rendered by jinja2 in transformers' environment
//! (`tests/fixtures/llama3_1_template.json`).

use serde_json::Value;

use super::python::{json_dumps_with, DumpOptions};

/// The date the template writes when none is given.
const TODAY: &str = "26 Jul 2024";

/// What the model is asked before the tools' descriptions.
const INSTRUCTION: &str = "Given the following functions, please respond with a JSON for a \
function call with its proper arguments that best answers the given prompt.\n\nRespond in the \
format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do \
not use variables.\n\n";

/// The prompt text of `messages` with `tools` offered (non-empty), beginning with `bos`;
/// `add_generation_prompt` opens the assistant's turn. Refuses (as the template does) a dialog
/// with no message after the system one, and an assistant turn with more than one tool call.
pub fn llama31_tool_prompt(
    messages: &[Value],
    tools: &[Value],
    add_generation_prompt: bool,
    bos: &str,
) -> Result<String, String> {
    let mut text = String::from(bos);
    let (system, rest) = match messages.split_first() {
        Some((first, rest)) if role(first) == "system" => (content(first).trim().to_string(), rest),
        _ => (String::new(), messages),
    };
    text += &header("system");
    text += "Environment: ipython\n";
    text += &format!("Cutting Knowledge Date: December 2023\nToday Date: {TODAY}\n\n");
    text += &system;
    text += "<|eot_id|>";
    // The tools go into the first message after the system one, whoever sent it.
    let Some((first, rest)) = rest.split_first() else {
        return Err(
            "tools are described in the first user message, and there is no message after the \
             system one"
                .into(),
        );
    };
    text += &header("user");
    text += INSTRUCTION;
    for tool in tools {
        text += &json(tool, Some(4));
        text += "\n\n";
    }
    text += content(first).trim();
    text += "<|eot_id|>";
    for (i, message) in rest.iter().enumerate() {
        let role = role(message);
        if let Some(calls) = message.get("tool_calls") {
            let [call] = calls.as_array().map(Vec::as_slice).unwrap_or_default() else {
                return Err(format!(
                    "message {}: Llama 3.1 makes one tool call per turn; this one has {}",
                    i + 2,
                    calls.as_array().map_or(0, Vec::len)
                ));
            };
            let function = &call["function"];
            text += &header("assistant");
            text += "{\"name\": \"";
            text += function["name"].as_str().unwrap_or_default();
            text += "\", \"parameters\": ";
            text += &json(&function["arguments"], None);
            text += "}<|eot_id|>";
        } else if role == "tool" || role == "ipython" {
            text += &header("ipython");
            text += &json(&message["content"], None);
            text += "<|eot_id|>";
        } else {
            text += &header(role);
            text += content(message).trim();
            text += "<|eot_id|>";
        }
    }
    if add_generation_prompt {
        text += &header("assistant");
    }
    Ok(text)
}

/// A message's role (empty when missing).
fn role(message: &Value) -> &str {
    message["role"].as_str().unwrap_or_default()
}

/// A message's text content (empty when missing or not text).
fn content(message: &Value) -> &str {
    message["content"].as_str().unwrap_or_default()
}

/// The header that opens `role`'s turn.
fn header(role: &str) -> String {
    format!("<|start_header_id|>{role}<|end_header_id|>\n\n")
}

/// transformers' `tojson`: `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn json(value: &Value, indent: Option<usize>) -> String {
    let options = DumpOptions {
        ensure_ascii: false,
        indent,
        ..DumpOptions::default()
    };
    json_dumps_with(value, &options)
}
