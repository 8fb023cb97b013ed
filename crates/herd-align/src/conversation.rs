//! Post-training examples in Llama 3.1 messages, read from the formats found in the wild:
//!
//! | format | record |
//! |---|---|
//! | OpenAI | `{"messages": [{"role", "content", "tool_calls"?}]}` |
//! | ShareGPT (LLaMA-Factory) | `{"conversations": [{"from": "human"/"gpt"/"system"/"function_call"/"observation", "value"}], "system"?}` |
//! | Alpaca | `{"instruction", "input", "output", "system"?, "history"?: [[user, assistant], …]}` |
//! | LLaMA-Factory preference | ShareGPT `conversations` plus `"chosen"`/`"rejected"` messages |
//! | prompt/chosen/rejected | `{"prompt", "chosen", "rejected", "edited"?}` strings |
//! | HH-RLHF | `{"chosen", "rejected"}` transcripts of `\n\nHuman:` / `\n\nAssistant:` turns |
//!
//! A record that fits none, or breaks one (an unknown role, no assistant reply, identical
//! chosen and rejected replies), is rejected with the reason; the caller counts and reports it.

use herd_tokenizer::chat::{Message, Role, StopReason, ToolCall};
use serde_json::Value;

/// One post-training example.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// A conversation ending with an assistant message (SFT data).
    Dialog(Vec<Message>),
    /// Replies to one prompt ranked by preference (reward-model and DPO data).
    Preference(Preference),
}

/// A prompt and two (or three) ranked assistant replies.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    /// The conversation so far, ending with a user (or tool) message.
    pub prompt: Vec<Message>,
    /// The preferred reply.
    pub chosen: Message,
    /// The worse reply.
    pub rejected: Message,
    /// A human edit of the chosen reply, ranked above both (paper §4.2.1).
    pub edited: Option<Message>,
}

impl Preference {
    /// Every (better, worse) pair the ranking edited > chosen > rejected gives.
    pub fn pairs(&self) -> Vec<(&Message, &Message)> {
        let mut pairs = Vec::new();
        if let Some(edited) = &self.edited {
            pairs.push((edited, &self.chosen));
            pairs.push((edited, &self.rejected));
        }
        pairs.push((&self.chosen, &self.rejected));
        pairs
    }
}

/// The record formats; `Auto` tells them apart by their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decide per record.
    Auto,
    /// OpenAI `messages`.
    OpenAi,
    /// ShareGPT `conversations` (with `chosen`/`rejected`: LLaMA-Factory's preference format).
    ShareGpt,
    /// Alpaca `instruction`/`input`/`output`.
    Alpaca,
    /// `prompt`/`chosen`/`rejected` strings.
    PromptPairs,
    /// HH-RLHF transcripts.
    HhRlhf,
}

impl Format {
    /// The format a record looks like.
    pub fn detect(record: &Value) -> Option<Format> {
        let has = |key: &str| record.get(key).is_some();
        let text = |key: &str| record.get(key).and_then(Value::as_str);
        if has("messages") {
            Some(Format::OpenAi)
        } else if has("conversations") {
            Some(Format::ShareGpt)
        } else if has("instruction") {
            Some(Format::Alpaca)
        } else if has("prompt") && has("chosen") && has("rejected") {
            Some(Format::PromptPairs)
        } else if text("chosen").is_some_and(|t| t.contains("\n\nHuman:")) {
            Some(Format::HhRlhf)
        } else {
            None
        }
    }
}

/// Reads one record as an example.
pub fn parse_record(record: &Value, format: Format) -> Result<Example, String> {
    let format = match format {
        Format::Auto => Format::detect(record).ok_or(
            "unknown record: expected messages, conversations, instruction/output, \
             prompt/chosen/rejected or an HH-RLHF transcript",
        )?,
        f => f,
    };
    let example = match format {
        Format::OpenAi => with_preference(openai_messages(record)?, record, openai_message)?,
        Format::ShareGpt => with_preference(sharegpt_messages(record)?, record, sharegpt_message)?,
        Format::Alpaca => Example::Dialog(alpaca_messages(record)?),
        Format::PromptPairs => prompt_pairs(record)?,
        Format::HhRlhf => hh_rlhf(record)?,
        Format::Auto => unreachable!("resolved above"),
    };
    check(&example)?;
    Ok(example)
}

/// A string field.
fn text<'a>(record: &'a Value, key: &str) -> Result<&'a str, String> {
    record
        .get(key)
        .and_then(Value::as_str)
        .ok_or(format!("no string field {key:?}"))
}

/// Messages become a preference when the record also has `chosen`/`rejected` replies (each a
/// message object in the record's own format, or a plain string).
fn with_preference(
    messages: Vec<Message>,
    record: &Value,
    message: fn(&Value) -> Result<Message, String>,
) -> Result<Example, String> {
    let (Some(chosen), Some(rejected)) = (record.get("chosen"), record.get("rejected")) else {
        return Ok(Example::Dialog(messages));
    };
    let reply = |v: &Value| match v.as_str() {
        Some(s) => Ok(Message::new(Role::Assistant, s)),
        None => message(v),
    };
    Ok(Example::Preference(Preference {
        prompt: messages,
        chosen: reply(chosen)?,
        rejected: reply(rejected)?,
        edited: record.get("edited").map(reply).transpose()?,
    }))
}

fn openai_messages(record: &Value) -> Result<Vec<Message>, String> {
    record
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("\"messages\" is not a list")?
        .iter()
        .map(openai_message)
        .collect()
}

/// `{"role", "content", "tool_calls"?}`; `content` may be a list of `{"type": "text", "text"}`.
fn openai_message(m: &Value) -> Result<Message, String> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool" | "ipython" | "function") => Role::Ipython,
        other => return Err(format!("unknown role {other:?}")),
    };
    let content = match m.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        Some(other) => return Err(format!("content is {other}, not text")),
    };
    let mut message = Message::new(role, content);
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function").unwrap_or(call);
        message.tool_calls.push(tool_call(function)?);
    }
    if !message.tool_calls.is_empty() {
        message.stop_reason = Some(StopReason::EndOfMessage);
    }
    Ok(message)
}

/// `{"name", "arguments"}`, the arguments an object or a JSON string of one.
fn tool_call(function: &Value) -> Result<ToolCall, String> {
    let name = text(function, "name")?;
    let arguments = match function.get("arguments") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Some(v) => v.clone(),
        None => Value::Object(Default::default()),
    };
    Ok(ToolCall {
        call_id: String::new(),
        tool_name: name.to_string(),
        arguments,
    })
}

fn sharegpt_messages(record: &Value) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    if let Some(system) = record.get("system").and_then(Value::as_str) {
        messages.push(Message::new(Role::System, system));
    }
    let turns = record
        .get("conversations")
        .and_then(Value::as_array)
        .ok_or("\"conversations\" is not a list")?;
    for turn in turns {
        messages.push(sharegpt_message(turn)?);
    }
    Ok(messages)
}

/// `{"from", "value"}`; a `function_call` is an assistant tool call, an `observation` its result.
fn sharegpt_message(turn: &Value) -> Result<Message, String> {
    let value = text(turn, "value")?;
    let role = match turn.get("from").and_then(Value::as_str) {
        Some("human" | "user") => Role::User,
        Some("gpt" | "assistant") => Role::Assistant,
        Some("system") => Role::System,
        Some("observation" | "tool") => Role::Ipython,
        Some("function_call") => {
            let call: Value = serde_json::from_str(value)
                .map_err(|e| format!("function_call is not JSON: {e}"))?;
            let mut message = Message::new(Role::Assistant, "");
            message.tool_calls.push(tool_call(&call)?);
            message.stop_reason = Some(StopReason::EndOfMessage);
            return Ok(message);
        }
        other => return Err(format!("unknown speaker {other:?}")),
    };
    Ok(Message::new(role, value))
}

/// The user turn is `instruction` and `input` joined by a newline, as LLaMA-Factory does.
fn alpaca_messages(record: &Value) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    if let Some(system) = record.get("system").and_then(Value::as_str) {
        messages.push(Message::new(Role::System, system));
    }
    for pair in record
        .get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(q), Value::String(a)]) => {
                messages.push(Message::new(Role::User, q.as_str()));
                messages.push(Message::new(Role::Assistant, a.as_str()));
            }
            _ => return Err("history entries must be [user, assistant] string pairs".into()),
        }
    }
    let instruction = text(record, "instruction")?;
    let user = match record.get("input").and_then(Value::as_str) {
        Some(input) if !input.is_empty() => format!("{instruction}\n{input}"),
        _ => instruction.to_string(),
    };
    messages.push(Message::new(Role::User, user));
    messages.push(Message::new(Role::Assistant, text(record, "output")?));
    Ok(messages)
}

fn prompt_pairs(record: &Value) -> Result<Example, String> {
    let prompt = vec![Message::new(Role::User, text(record, "prompt")?)];
    with_preference(prompt, record, openai_message)
}

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

/// An HH-RLHF pair: the shared transcript up to the last `\n\nAssistant:` is the prompt, what
/// follows it in `chosen` and `rejected` are the replies.
fn hh_rlhf(record: &Value) -> Result<Example, String> {
    let split = |key: &str| -> Result<(&str, String), String> {
        let transcript = text(record, key)?;
        let at = transcript
            .rfind(ASSISTANT)
            .ok_or(format!("{key} has no \\n\\nAssistant: turn"))?;
        let reply = transcript[at + ASSISTANT.len()..].trim().to_string();
        Ok((&transcript[..at], reply))
    };
    let (prompt, chosen) = split("chosen")?;
    let (other_prompt, rejected) = split("rejected")?;
    if prompt != other_prompt {
        return Err("chosen and rejected continue different conversations".into());
    }
    Ok(Example::Preference(Preference {
        prompt: hh_turns(prompt)?,
        chosen: Message::new(Role::Assistant, chosen),
        rejected: Message::new(Role::Assistant, rejected),
        edited: None,
    }))
}

/// `\n\nHuman: …\n\nAssistant: …` turns as messages.
fn hh_turns(transcript: &str) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    let mut rest = transcript;
    while !rest.is_empty() {
        let (role, marker) = if rest.starts_with(HUMAN) {
            (Role::User, HUMAN)
        } else if rest.starts_with(ASSISTANT) {
            (Role::Assistant, ASSISTANT)
        } else {
            return Err(format!(
                "transcript text outside a turn: {:?}",
                rest.chars().take(40).collect::<String>()
            ));
        };
        let body = &rest[marker.len()..];
        let end = [body.find(HUMAN), body.find(ASSISTANT)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(body.len());
        messages.push(Message::new(role, body[..end].trim()));
        rest = &body[end..];
    }
    Ok(messages)
}

/// What every example must satisfy to be trained on.
fn check(example: &Example) -> Result<(), String> {
    match example {
        Example::Dialog(messages) => match messages.last() {
            Some(m) if m.role == Role::Assistant => Ok(()),
            Some(_) => Err("the conversation does not end with an assistant reply".into()),
            None => Err("no messages".into()),
        },
        Example::Preference(p) => {
            if p.prompt.is_empty() {
                return Err("the preference pair has no prompt".into());
            }
            if p.prompt.last().is_some_and(|m| m.role == Role::Assistant) {
                return Err("the prompt ends with an assistant message".into());
            }
            for reply in [&p.chosen, &p.rejected] {
                if reply.role != Role::Assistant {
                    return Err("chosen and rejected must be assistant replies".into());
                }
                if reply.content.trim().is_empty() && reply.tool_calls.is_empty() {
                    return Err("an empty reply".into());
                }
            }
            if p.chosen == p.rejected {
                return Err("chosen and rejected are the same reply".into());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dialog(record: Value) -> Vec<Message> {
        match parse_record(&record, Format::Auto).unwrap() {
            Example::Dialog(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn preference(record: Value) -> Preference {
        match parse_record(&record, Format::Auto).unwrap() {
            Example::Preference(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn openai_messages_with_tool_calls_and_parts() {
        let m = dialog(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "content": "18C"},
            {"role": "assistant", "content": "18 °C."}
        ]}));
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].content, "Weather in Paris?");
        assert_eq!(m[2].tool_calls[0].tool_name, "get_weather");
        assert_eq!(m[2].tool_calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(m[2].stop_reason, Some(StopReason::EndOfMessage));
        assert_eq!(m[3].role, Role::Ipython);
    }

    #[test]
    fn sharegpt_with_function_calls_and_system() {
        let m = dialog(json!({"system": "S", "conversations": [
            {"from": "human", "value": "Find a recipe"},
            {"from": "function_call", "value": "{\"name\": \"search\", \"arguments\": {\"q\": \"rice\"}}"},
            {"from": "observation", "value": "{\"recipes\": []}"},
            {"from": "gpt", "value": "None found."}
        ]}));
        let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
        use Role::*;
        assert_eq!(roles, [System, User, Assistant, Ipython, Assistant]);
        assert_eq!(m[2].tool_calls[0].arguments, json!({"q": "rice"}));
    }

    #[test]
    fn alpaca_joins_instruction_and_input_and_keeps_history() {
        let m = dialog(
            json!({"instruction": "Translate", "input": "chat", "output": "cat",
                              "history": [["hi", "hello"]]}),
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].content, "Translate\nchat");
        assert_eq!(m[3], Message::new(Role::Assistant, "cat"));
        let m = dialog(json!({"instruction": "Say hi", "input": "", "output": "hi"}));
        assert_eq!(m[0].content, "Say hi");
    }

    #[test]
    fn preferences_in_three_formats() {
        let p = preference(json!({"conversations": [{"from": "human", "value": "Q"}],
                                  "chosen": {"from": "gpt", "value": "good"},
                                  "rejected": {"from": "gpt", "value": "bad"}}));
        assert_eq!(
            (p.chosen.content.as_str(), p.rejected.content.as_str()),
            ("good", "bad")
        );
        let p = preference(
            json!({"prompt": "Q", "chosen": "good", "rejected": "bad", "edited": "best"}),
        );
        assert_eq!(p.prompt, vec![Message::new(Role::User, "Q")]);
        let pairs: Vec<(&str, &str)> = p
            .pairs()
            .iter()
            .map(|(a, b)| (a.content.as_str(), b.content.as_str()))
            .collect();
        assert_eq!(pairs, [("best", "good"), ("best", "bad"), ("good", "bad")]);
        let p = preference(json!({
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: A pun.",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: No."}));
        let turns: Vec<(Role, &str)> = p
            .prompt
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect();
        assert_eq!(
            turns,
            [
                (Role::User, "Hi"),
                (Role::Assistant, "Hello!"),
                (Role::User, "Joke?")
            ]
        );
        assert_eq!(
            (p.chosen.content.as_str(), p.rejected.content.as_str()),
            ("A pun.", "No.")
        );
    }

    #[test]
    fn broken_records_say_why() {
        let reason = |v: Value| parse_record(&v, Format::Auto).unwrap_err();
        assert!(reason(json!({"text": "x"})).contains("unknown record"));
        assert!(reason(json!({"messages": [{"role": "robot", "content": "x"}]})).contains("robot"));
        assert!(
            reason(json!({"messages": [{"role": "user", "content": "x"}]}))
                .contains("assistant reply")
        );
        assert!(
            reason(json!({"prompt": "Q", "chosen": "same", "rejected": "same"})).contains("same")
        );
        assert!(reason(json!({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}))
            .contains("different conversations"));
        assert!(reason(json!({"instruction": "x"})).contains("output"));
        // Text outside a turn is quoted by characters: a multi-byte character at the 40th byte
        // once split mid-character and panicked.
        let prompt = format!("{}ü and more\n\nHuman: Hi\n\nAssistant: ", "a".repeat(39));
        let why = reason(json!({"chosen": format!("{prompt}A"), "rejected": format!("{prompt}B")}));
        assert!(
            why.contains("outside a turn") && why.contains("aaaü"),
            "{why}"
        );
    }
}
