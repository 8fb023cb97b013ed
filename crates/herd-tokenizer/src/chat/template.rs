//! HF chat templates (Jinja, as in `tokenizer_config.json` or a GGUF's `tokenizer.chat_template`)
//! rendered with `minijinja`, like transformers' `apply_chat_template`.

use minijinja::{context, Environment};

use crate::chat::python::{json_dumps_with, DumpOptions};
use crate::chat::Message;

/// The most instructions a chat template may run.
const TEMPLATE_FUEL: u64 = 50_000_000;

/// A chat template compiled once (a server or a training run renders it for every request or
/// example), in transformers' environment: blocks trimmed (`trim_blocks`, `lstrip_blocks`),
/// transformers' `tojson`, `raise_exception`, `strftime_now` (Llama 3.2's templates write
/// today's date with it), Python string methods through pycompat, and a bound on the work one
/// rendering may do.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not parse is refused here.
    pub fn new(source: &str) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        // A template comes with a downloaded model: bound the work it may ask for (a chat of
        // thousands of messages with tools takes well under a million instructions).
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("chat template does not parse: {e}"))?;
        Ok(ChatTemplate { env })
    }

    /// Renders `messages` (role and content).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, String> {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role.header(), "content": m.content}))
            .collect();
        self.render_json(&messages, None, add_generation_prompt, bos_token, eos_token)
    }

    /// Renders messages given as JSON objects in OpenAI's shape (`role`, `content`,
    /// `tool_calls`, `tool_call_id`) with `tools` (OpenAI tool objects) when given, as
    /// transformers' `apply_chat_template(messages, tools=…)` does.
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, String> {
        let template = self.env.get_template("chat").map_err(|e| e.to_string())?;
        let rendered = match tools {
            Some(tools) => template
                .render(context! { messages, tools, add_generation_prompt, bos_token, eos_token }),
            None => {
                template.render(context! { messages, add_generation_prompt, bos_token, eos_token })
            }
        };
        rendered.map_err(|e| format!("chat template failed: {e}"))
    }
}

/// Renders `messages` with `template` once (compile a [`ChatTemplate`] to render many times);
/// `add_generation_prompt` opens the assistant's turn.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, String> {
    ChatTemplate::new(template)?.render(messages, add_generation_prompt, bos_token, eos_token)
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=…, separators=…,
/// sort_keys=…)` — not Jinja's own, which escapes HTML characters and writes no spaces (Llama
/// transformers' `strftime_now(format)`: the local time now as Python's `strftime` writes it.
/// A format chrono cannot read is the template's error, not a panic.
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("strftime_now: {format:?} is not a strftime format"),
        ));
    }
    Ok(chrono::Local::now()
        .format_with_items(items.into_iter())
        .to_string())
}

/// 3.1's template writes tool definitions with `tojson(indent=4)`).
fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, minijinja::Error> {
    let invalid = |e: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e);
    let json = serde_json::to_value(&value).map_err(|e| invalid(e.to_string()))?;
    let separators = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(pair) if pair.len() == 2 => Some((pair[0].clone(), pair[1].clone())),
        Some(_) => return Err(invalid("tojson: `separators` takes two strings".into())),
        None => None,
    };
    let options = DumpOptions {
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        indent: kwargs.get::<Option<usize>>("indent")?,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        separators,
    };
    kwargs.assert_all_used()?;
    Ok(json_dumps_with(&json, &options))
}
