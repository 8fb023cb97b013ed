//! Reading the model's reply back into a message with its tool call, as `llama_models`'
//! `ChatFormat.decode_assistant_message_from_content` does: strip the header and end token,
//! then look for `<function=…>{…}`, a whole-reply JSON call, a `[name(k=v)]` list, or a
//! built-in `tool.call(query="…")`; a `<|python_tag|>` reply that is none of those is code for
//! the interpreter. Where Meta's code raises, this returns an error.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::chat::llama3::is_builtin;
use crate::chat::python::parse_call_list;
use crate::chat::{Message, Role, StopReason, ToolCall};

static FUNCTION_TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<function=(?P<name>[^}]+)>(?P<args>\{.*?\})").expect("valid regex")
});
static BUILTIN_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(?P<tool>\w+)\.call\(query="(?P<query>[^"]*)"\)"#).expect("valid regex")
});

/// Parses a generated assistant reply (special tokens as text) into a message.
pub fn parse_assistant_reply(content: &str, stop_reason: StopReason) -> Result<Message, String> {
    let mut content = content.trim_matches(' ');
    let mut stop_reason = stop_reason;
    content = content
        .strip_prefix("<|start_header_id|>assistant<|end_header_id|>\n\n")
        .unwrap_or(content);
    let python_tag = content.starts_with("<|python_tag|>");
    content = content.strip_prefix("<|python_tag|>").unwrap_or(content);
    if let Some(rest) = content.strip_suffix("<|eot_id|>") {
        content = rest;
        stop_reason = StopReason::EndOfTurn;
    } else if let Some(rest) = content.strip_suffix("<|eom_id|>") {
        content = rest;
        stop_reason = StopReason::EndOfMessage;
    }
    let call = match custom_tool_call(content)? {
        Some((name, args)) if is_builtin(&name) => {
            let first = match &args {
                Value::Object(map) => map
                    .values()
                    .next()
                    .cloned()
                    .ok_or(format!("built-in tool `{name}` called without arguments"))?,
                _ => return Err(format!("built-in tool `{name}` needs keyword arguments")),
            };
            Some((
                name,
                Value::Object(Map::from_iter([("query".to_string(), first)])),
            ))
        }
        // `"parameters": null` is no call at all.
        Some((_, Value::Null)) => None,
        Some(call) => Some(call),
        None => builtin_tool_call(content).or_else(|| {
            python_tag.then(|| {
                (
                    "code_interpreter".to_string(),
                    Value::Object(Map::from_iter([(
                        "code".to_string(),
                        Value::String(content.to_string()),
                    )])),
                )
            })
        }),
    };
    let (content, tool_calls) = match call {
        Some((tool_name, arguments)) => {
            validate_arguments(&arguments)?;
            (
                String::new(),
                vec![ToolCall {
                    call_id: String::new(),
                    tool_name,
                    arguments,
                }],
            )
        }
        None => (content.to_string(), Vec::new()),
    };
    Ok(Message {
        role: Role::Assistant,
        content,
        tool_calls,
        stop_reason: Some(stop_reason),
    })
}

/// `maybe_extract_custom_tool_call`: function tag, whole-reply JSON, or a Python call list.
fn custom_tool_call(content: &str) -> Result<Option<(String, Value)>, String> {
    if let Some(m) = FUNCTION_TAG.captures(content) {
        // Meta turns every single quote into a double quote before parsing.
        let args = m["args"].replace('\'', "\"");
        return Ok(serde_json::from_str::<Value>(&args)
            .ok()
            .map(|a| (m["name"].to_string(), a)));
    }
    if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(content) {
        if object.get("type").and_then(Value::as_str) == Some("function")
            || object.contains_key("name")
        {
            let name = object.get("name").ok_or("tool call JSON has no `name`")?;
            let params = object
                .get("parameters")
                .ok_or("tool call JSON has no `parameters`")?;
            let name = name
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| name.to_string());
            return Ok(Some((name, params.clone())));
        }
        return Ok(None);
    }
    match parse_call_list(content) {
        Some(Ok(mut calls)) => {
            let (name, args) = calls.swap_remove(0);
            Ok(Some((name, Value::Object(args))))
        }
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

fn builtin_tool_call(content: &str) -> Option<(String, Value)> {
    let m = BUILTIN_CALL.captures(content)?;
    Some((
        m["tool"].to_string(),
        Value::Object(Map::from_iter([(
            "query".to_string(),
            Value::String(m["query"].to_string()),
        )])),
    ))
}

/// Meta's type for arguments: a string, or an object of primitives, lists of primitives and
/// objects of primitives.
fn validate_arguments(arguments: &Value) -> Result<(), String> {
    let primitive = |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_));
    let ok = match arguments {
        Value::String(_) => true,
        Value::Object(map) => map.values().all(|v| match v {
            Value::Array(items) => items.iter().all(primitive),
            Value::Object(inner) => inner.values().all(primitive),
            _ => true,
        }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tool arguments nest too deeply or are not an object: {arguments}"
        ))
    }
}
