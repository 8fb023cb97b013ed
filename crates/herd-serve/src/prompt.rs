//! A chat request's messages and tools as the model's prompt, and the model's reply read back
//! into tool calls.
//!
//! With a Jinja chat template (`--chat-template`, or the model's own) the messages go to the
//! template in OpenAI's shape — `tool_calls` with their arguments parsed into objects, `tool`
//! messages, and `tools` — as transformers' `apply_chat_template` and vLLM pass them; Llama 3.1
//! Instruct's template writes the JSON custom-tool prompt, the built-in tools' `Environment:
//! ipython` and the `<|python_tag|>`/`<|eom_id|>` turns. A Llama 3 model without a template uses
//! Meta's dialog format (`llama_models`' `ChatFormat`), and with `tools` the prompt Llama 3.1
//! Instruct's template writes (`chat::tool_prompt`). A reply is read back with
//! `llama_models`' rules (a whole-reply JSON call, `<function=…>`, a `[name(k=v)]` list, a
//! built-in `tool.call(query=…)`, `<|python_tag|>` code).
//!
//! `tool_choice: "required"` or a named function opens the reply with the start of the JSON
//! call (`{"name": "f", "parameters": `, or `{"name": "` when the model must pick among several
//! tools) — herd has no grammar-constrained decoding, and this is how the Llama 3.1 JSON format
//! starts a call anyway — and the reply ends as soon as the call's arguments object closes
//! ([`call_arguments_end`]), whatever the model would have added.

use herd_tokenizer::chat::llama3::encode_dialog_prompt;
use herd_tokenizer::chat::tool_parse::parse_assistant_reply;
use herd_tokenizer::chat::tool_prompt::llama31_tool_prompt;
use herd_tokenizer::chat::{Message, Role, StopReason, ToolCall, ToolPromptFormat};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// One message of a chat request.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant`, `tool` (or `ipython`).
    pub role: String,
    /// Text, or a list of content parts (`{"type": "text", "text": …}`).
    #[serde(default)]
    pub content: Option<Content>,
    /// Calls an assistant message made.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallIn>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` (others — images, audio — are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// A tool call in an assistant message of the request.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn {
    /// The call's id.
    #[serde(default)]
    pub id: Option<String>,
    /// The function called.
    pub function: FunctionCallIn,
}

/// The function of a tool call.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCallIn {
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON string (or an object, as some clients send).
    pub arguments: Value,
}

/// A tool offered to the model.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name, description and JSON-schema parameters.
    pub function: FunctionDef,
}

/// A function offered as a tool.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct FunctionDef {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters as a JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// How the model may use the tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Never call a tool (the tools are not shown).
    None,
    /// Call one if it helps.
    Auto,
    /// Must call one.
    Required,
    /// Must call this function.
    Function(String),
}

impl ToolChoice {
    /// Reads `tool_choice` (default `auto` with tools, `none` without).
    pub fn read(value: Option<&Value>, have_tools: bool) -> Result<ToolChoice, ApiError> {
        let bad = || {
            ApiError::invalid(
                "`tool_choice` must be \"none\", \"auto\", \"required\" or \
                 {\"type\": \"function\", \"function\": {\"name\": …}}",
                Some("tool_choice"),
            )
        };
        let choice = match value {
            None | Some(Value::Null) if have_tools => ToolChoice::Auto,
            None | Some(Value::Null) => ToolChoice::None,
            Some(Value::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                _ => return Err(bad()),
            },
            Some(v) => ToolChoice::Function(
                v.pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?
                    .to_string(),
            ),
        };
        if choice != ToolChoice::None && !have_tools {
            return Err(ApiError::invalid(
                "`tool_choice` asks for a tool call but `tools` is empty",
                Some("tool_choice"),
            ));
        }
        Ok(choice)
    }
}

/// A chat request's prompt.
#[derive(Debug, Clone)]
pub struct ChatPrompt {
    /// The token ids, ending where the reply starts (including `prefix`).
    pub ids: Vec<u32>,
    /// Text the reply was opened with (part of the prompt; put back before parsing).
    pub prefix: String,
    /// Whether the reply is read for tool calls.
    pub tools_active: bool,
}

/// Builds the prompt of `messages` with `tools` as `choice` allows.
pub fn chat_prompt(
    state: &AppState,
    messages: &[ChatMessage],
    tools: &[Tool],
    choice: &ToolChoice,
) -> Result<ChatPrompt, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "`messages` is empty: send at least one message",
            Some("messages"),
        ));
    }
    let shown: Vec<&Tool> = match choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Function(name) => {
            let tool = tools
                .iter()
                .find(|t| &t.function.name == name)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("`tool_choice` names `{name}`, which is not among `tools`"),
                        Some("tool_choice"),
                    )
                })?;
            vec![tool]
        }
        _ => tools.iter().collect(),
    };
    for (i, tool) in shown.iter().enumerate() {
        if tool.kind != "function" {
            return Err(ApiError::invalid(
                format!(
                    "`tools[{i}].type` is `{}`; only `function` tools exist",
                    tool.kind
                ),
                Some(&format!("tools[{i}].type")),
            ));
        }
    }
    let prefix = match (choice, shown.as_slice()) {
        // With one tool, a required call can only be to it.
        (ToolChoice::Required, [tool]) => call_opening(&tool.function.name),
        (ToolChoice::Required, _) => "{\"name\": \"".to_string(),
        (ToolChoice::Function(name), _) => call_opening(name),
        _ => String::new(),
    };
    let tokenizer = &state.tokenizer;
    let encode_error = |e: herd_tokenizer::Error| ApiError::internal(e.to_string());
    // The messages and tools in OpenAI's shape, for a template or Llama 3.1's tool prompt.
    let json_messages = || {
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| template_message(i, m))
            .collect::<Result<Vec<_>, _>>()
    };
    let json_tools: Vec<Value> = shown.iter().map(|t| json!(t)).collect();
    let bos = tokenizer.token_text(tokenizer.bos_id());
    let mut ids = match state.chat_template() {
        Some(template) => {
            let eos = tokenizer.token_text(tokenizer.stop_ids().first().copied());
            let text = template
                .render_json(
                    &json_messages()?,
                    (!json_tools.is_empty()).then_some(json_tools.as_slice()),
                    true,
                    &bos,
                    &eos,
                )
                .map_err(|e| ApiError::invalid(e, Some("messages")))?;
            tokenizer.encode(&text, true).map_err(encode_error)?
        }
        None if tokenizer.is_llama3() && !shown.is_empty() => {
            // Llama 3.1's JSON tool prompt, as its template writes it.
            let text = llama31_tool_prompt(&json_messages()?, &json_tools, true, &bos)
                .map_err(|e| ApiError::invalid(e, Some("messages")))?;
            tokenizer.encode(&text, true).map_err(encode_error)?
        }
        None if tokenizer.is_llama3() => {
            let dialog = messages
                .iter()
                .enumerate()
                .map(|(i, m)| dialog_message(i, m))
                .collect::<Result<Vec<_>, _>>()?;
            encode_dialog_prompt(tokenizer, &dialog, ToolPromptFormat::Json)
                .map_err(encode_error)?
        }
        None => {
            return Err(ApiError::invalid(
                "this model has no chat template: start `herd serve` with --chat-template, or \
                 send the prompt to /v1/completions",
                Some("messages"),
            ))
        }
    };
    ids.extend(tokenizer.encode(&prefix, false).map_err(encode_error)?);
    Ok(ChatPrompt {
        ids,
        prefix,
        tools_active: !shown.is_empty(),
    })
}

/// The start of a JSON call of `name`, up to its arguments.
fn call_opening(name: &str) -> String {
    let name = serde_json::to_string(name).unwrap_or_default();
    format!("{{\"name\": {name}, \"parameters\": ")
}

/// A message's text: the string, or its text parts joined.
fn content_text(i: usize, message: &ChatMessage) -> Result<String, ApiError> {
    match &message.content {
        None => Ok(String::new()),
        Some(Content::Text(text)) => Ok(text.clone()),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.kind.as_str(), &part.text) {
                    ("text", Some(t)) => text.push_str(t),
                    ("text", None) => {
                        return Err(ApiError::invalid(
                            "a text part needs `text`",
                            Some(&format!("messages[{i}].content[{j}].text")),
                        ))
                    }
                    (kind, _) => {
                        return Err(ApiError::unsupported(
                            &format!("messages[{i}].content[{j}]"),
                            &format!("this model reads text only, not `{kind}` parts"),
                        ))
                    }
                }
            }
            Ok(text)
        }
    }
}

/// The role, checked (OpenAI's `developer` is a system message).
fn role(i: usize, message: &ChatMessage) -> Result<Role, ApiError> {
    match message.role.as_str() {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" | "ipython" => Ok(Role::Ipython),
        other => Err(ApiError::invalid(
            format!("role `{other}` is not one of system, developer, user, assistant, tool"),
            Some(&format!("messages[{i}].role")),
        )),
    }
}

/// A call's arguments as an object (OpenAI sends a JSON string).
fn arguments(i: usize, call: &ToolCallIn) -> Result<Value, ApiError> {
    match &call.function.arguments {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ApiError::invalid(
                format!("the arguments are not JSON: {e}"),
                Some(&format!("messages[{i}].tool_calls")),
            )
        }),
        other => Ok(other.clone()),
    }
}

/// A message as a template sees it.
fn template_message(i: usize, message: &ChatMessage) -> Result<Value, ApiError> {
    let role = match role(i, message)? {
        Role::Ipython => "tool",
        Role::System if message.role == "developer" => "system",
        _ => message.role.as_str(),
    };
    let mut out = json!({"role": role, "content": content_text(i, message)?});
    if !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .map(|c| {
                Ok(json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": arguments(i, c)?},
                }))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out["tool_calls"] = Value::Array(calls);
    }
    if let Some(id) = &message.tool_call_id {
        out["tool_call_id"] = json!(id);
    }
    Ok(out)
}

/// A message in Meta's dialog format.
fn dialog_message(i: usize, message: &ChatMessage) -> Result<Message, ApiError> {
    let mut out = Message::new(role(i, message)?, content_text(i, message)?);
    for call in &message.tool_calls {
        out.tool_calls.push(ToolCall {
            call_id: call.id.clone().unwrap_or_default(),
            tool_name: call.function.name.clone(),
            arguments: arguments(i, call)?,
        });
    }
    Ok(out)
}

/// A tool call read out of a reply, in OpenAI's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOut {
    /// The function's name.
    pub name: String,
    /// The arguments as a JSON string.
    pub arguments: String,
}

/// Reads `reply` (the prefix put back) for tool calls; `None` when it is plain text.
pub fn read_tool_calls(reply: &str, waits_for_tool: bool) -> Option<Vec<CallOut>> {
    let stop = if waits_for_tool {
        StopReason::EndOfMessage
    } else {
        StopReason::EndOfTurn
    };
    let message = parse_assistant_reply(reply.trim(), stop).ok()?;
    if message.tool_calls.is_empty() {
        return None;
    }
    Some(
        message
            .tool_calls
            .into_iter()
            .map(|c| CallOut {
                name: c.tool_name,
                arguments: match c.arguments {
                    Value::String(s) => s,
                    other => other.to_string(),
                },
            })
            .collect(),
    )
}

/// Where a forced call's arguments end in `reply` (the call's opening put back): the byte after
/// the `}` that closes the JSON object following `"parameters":`, or `None` while it is open.
/// A reply that `tool_choice` opened as a call is complete there, whatever the model would add.
pub fn call_arguments_end(reply: &str) -> Option<usize> {
    let key = reply.find("\"parameters\"")? + "\"parameters\"".len();
    let rest = reply[key..].trim_start().strip_prefix(':')?;
    let start = reply.len() - rest.trim_start().len();
    if !reply[start..].starts_with('{') {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in reply[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(start + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether text that starts `reply` might still become a tool call (so a stream holds it).
pub fn may_be_tool_call(reply: &str) -> bool {
    let start = reply.trim_start();
    ["{", "[", "<function=", "<|python_tag|>"]
        .iter()
        .any(|opening| start.starts_with(opening) || opening.starts_with(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_call_ends_where_its_arguments_close() {
        let opened = "{\"name\": \"f\", \"parameters\": ";
        let reply = format!("{opened}{{\"a\": \"}} {{\\\"\", \"b\": {{\"c\": 1}}}}, \"more\": 2}}");
        let end = call_arguments_end(&reply).unwrap();
        assert_eq!(
            &reply[opened.len()..end],
            "{\"a\": \"} {\\\"\", \"b\": {\"c\": 1}}"
        );
        assert_eq!(
            call_arguments_end(&format!("{opened}{{\"a\": {{\"b\": 1}}")),
            None
        );
        assert_eq!(call_arguments_end(&format!("{opened}1}}")), None);
        assert_eq!(call_arguments_end("{\"name\": \"f\""), None);
    }

    #[test]
    fn replies_that_are_calls_become_calls() {
        let calls = read_tool_calls(
            r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            calls,
            [CallOut {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }]
        );
        let calls =
            read_tool_calls("<|python_tag|>brave_search.call(query=\"herd\")", true).unwrap();
        assert_eq!(calls[0].name, "brave_search");
        assert!(read_tool_calls("It is sunny in Paris.", false).is_none());
    }

    #[test]
    fn streams_hold_only_what_may_be_a_call() {
        assert!(may_be_tool_call(""));
        assert!(may_be_tool_call("  {\"na"));
        assert!(may_be_tool_call("<fun"));
        assert!(!may_be_tool_call("Hello"));
        assert!(!may_be_tool_call(" The {"));
    }

    #[test]
    fn tool_choice_reads_openai_values() {
        assert_eq!(ToolChoice::read(None, true).unwrap(), ToolChoice::Auto);
        assert_eq!(ToolChoice::read(None, false).unwrap(), ToolChoice::None);
        let named = json!({"type": "function", "function": {"name": "f"}});
        assert_eq!(
            ToolChoice::read(Some(&named), true).unwrap(),
            ToolChoice::Function("f".into())
        );
        assert!(ToolChoice::read(Some(&json!("required")), false).is_err());
        assert!(ToolChoice::read(Some(&json!("sometimes")), true).is_err());
    }
}
