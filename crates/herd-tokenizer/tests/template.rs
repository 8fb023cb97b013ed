//! Llama 3.1 Instruct's Jinja chat template rendered by herd (minijinja) against transformers'
//! way of rendering it (jinja2 with transformers' environment and `tojson`; fixture by
//! tools/fixtures/make_template_fixture.py): dialogs with tools offered, a tool call and its
//! result, non-ASCII text — the same text, character for character. herd's own Llama 3.1 tool
//! prompt for template-less models (`chat::tool_prompt`) against the same renderings.

use herd_tokenizer::chat::template::ChatTemplate;
use herd_tokenizer::chat::tool_prompt::llama31_tool_prompt;
use serde_json::{json, Value};

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/llama3_1_template.json"))
        .expect("the fixture parses")
}

#[test]
fn llama_3_1_template_renders_as_transformers_does() {
    let fixture = fixture();
    let Some(path) = herd_util::testing::asset(fixture["template_asset"].as_str().unwrap()) else {
        return;
    };
    let template = ChatTemplate::new(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let messages = case["messages"].as_array().unwrap();
        let tools = case["tools"].as_array().map(Vec::as_slice);
        let text = template
            .render_json(
                messages,
                tools,
                case["add_generation_prompt"].as_bool().unwrap(),
                "<|begin_of_text|>",
                "<|eot_id|>",
            )
            .unwrap();
        assert_eq!(
            text,
            case["text"].as_str().unwrap(),
            "case {}",
            case["name"]
        );
    }
}

#[test]
fn the_tool_prompt_without_a_template_is_the_templates() {
    let fixture = fixture();
    let mut checked = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let Some(tools) = case["tools"].as_array() else {
            continue;
        };
        let text = llama31_tool_prompt(
            case["messages"].as_array().unwrap(),
            tools,
            case["add_generation_prompt"].as_bool().unwrap(),
            "<|begin_of_text|>",
        )
        .unwrap();
        assert_eq!(
            text,
            case["text"].as_str().unwrap(),
            "case {}",
            case["name"]
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn the_tool_prompt_refuses_what_the_template_refuses() {
    let tools = [json!({"type": "function", "function": {"name": "now", "parameters": {}}})];
    let only_system = [json!({"role": "system", "content": "Hi"})];
    let err = llama31_tool_prompt(&only_system, &tools, true, "").unwrap_err();
    assert!(err.contains("no message after the system one"), "{err}");
    let call = json!({"type": "function", "function": {"name": "now", "arguments": {}}});
    let two_calls = [
        json!({"role": "user", "content": "Time?"}),
        json!({"role": "assistant", "content": "", "tool_calls": [call.clone(), call]}),
    ];
    let err = llama31_tool_prompt(&two_calls, &tools, true, "").unwrap_err();
    assert!(
        err.contains("one tool call per turn; this one has 2"),
        "{err}"
    );
}

/// Today's date as the C library's `strftime` writes it (`date +FORMAT`, C locale).
fn date(format: &str) -> String {
    let out = std::process::Command::new("date")
        .env("LC_ALL", "C")
        .arg(format!("+{format}"))
        .output()
        .expect("`date` runs");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// `strftime_now` writes the local date as `strftime` does; Llama 3.2's template uses it for
/// its "Today Date"; a format that is not one is the template's error.
#[test]
fn strftime_now_writes_todays_date() {
    let template = ChatTemplate::new(r#"{{ strftime_now("%d %b %Y") }}"#).unwrap();
    let before = date("%d %b %Y");
    let text = template.render(&[], false, "", "").unwrap();
    assert!(
        text == before || text == date("%d %b %Y"),
        "{text} vs {before}"
    );
    let bad = ChatTemplate::new(r#"{{ strftime_now("%Q") }}"#).unwrap();
    assert!(bad.render(&[], false, "", "").is_err());

    let Some(path) = herd_util::testing::asset("llama.cpp/meta-llama-Llama-3.2-3B-Instruct.jinja")
    else {
        return;
    };
    let template = ChatTemplate::new(&std::fs::read_to_string(path).unwrap()).unwrap();
    let user = herd_tokenizer::chat::Message::new(herd_tokenizer::chat::Role::User, "Hi");
    let text = template
        .render(&[user], true, "<|begin_of_text|>", "<|eot_id|>")
        .unwrap();
    let today = date("%d %b %Y");
    assert!(text.contains(&format!("Today Date: {today}\n")), "{text}");
}
