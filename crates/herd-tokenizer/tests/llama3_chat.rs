//! The Llama 3.1 chat format against `llama_models`' ChatFormat (fixture made by
//! `tools/fixtures/make_chat_fixture.py`): dialog ids byte for byte, tool-call text, and the
//! parsing of tool calls out of generated replies.

use herd_tokenizer::chat::llama3::{encode_dialog_prompt, encode_message, encode_tool_call};
use herd_tokenizer::chat::tool_parse::parse_assistant_reply;
use herd_tokenizer::chat::{Message, StopReason, ToolCall, ToolPromptFormat};
use herd_tokenizer::Tokenizer;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/llama3_chat_format.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn format_of(case: &Value) -> ToolPromptFormat {
    case.get("tool_prompt_format")
        .map(|f| serde_json::from_value(f.clone()).unwrap())
        .unwrap_or_default()
}

#[test]
fn dialogs_encode_like_llama_models() {
    let Some(path) = herd_util::testing::asset("llama3/tokenizer.model") else {
        return;
    };
    let tokenizer = Tokenizer::llama3(&path).unwrap();
    let fixture = fixture();
    let mut checked = 0;
    for key in ["dialogs", "tool_prompt_format_dialogs"] {
        for case in fixture[key].as_array().unwrap() {
            let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
            let got = encode_dialog_prompt(&tokenizer, &messages, format_of(case)).unwrap();
            assert_eq!(got, ids(&case["ids"]), "{}", case["name"]);
            assert_eq!(
                tokenizer.decode(&got).unwrap(),
                case["text"].as_str().unwrap()
            );
            checked += 1;
        }
    }
    for case in fixture["message_cases"].as_array().unwrap() {
        let message: Message = serde_json::from_value(case["message"].clone()).unwrap();
        assert_eq!(
            encode_message(&tokenizer, &message, format_of(case)).unwrap(),
            ids(&case["ids"]),
            "{}",
            case["name"]
        );
        checked += 1;
    }
    assert!(checked >= 40);
}

#[test]
fn tool_calls_render_like_llama_models() {
    for case in fixture()["tool_call_encodings"].as_array().unwrap() {
        let call: ToolCall = serde_json::from_value(case["tool_call"].clone()).unwrap();
        assert_eq!(
            encode_tool_call(&call, format_of(case)),
            case["text"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}

#[test]
fn replies_parse_like_llama_models() {
    for case in fixture()["parse_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let stop: StopReason = serde_json::from_value(case["stop_reason"].clone()).unwrap();
        let got = parse_assistant_reply(case["content"].as_str().unwrap(), stop);
        if case["expected"].is_null() {
            assert!(
                got.is_err(),
                "{name}: Meta raises {}, herd gave {got:?}",
                case["error"]
            );
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = &case["expected"];
        assert_eq!(got.content, expected["content"].as_str().unwrap(), "{name}");
        assert_eq!(
            Some(serde_json::from_value::<StopReason>(expected["stop_reason"].clone()).unwrap()),
            got.stop_reason,
            "{name}"
        );
        let calls: Vec<(String, Value)> = got
            .tool_calls
            .iter()
            .map(|c| (c.tool_name.clone(), c.arguments.clone()))
            .collect();
        let expected_calls: Vec<(String, Value)> = expected["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["tool_name"].as_str().unwrap().to_string(),
                    c["arguments"].clone(),
                )
            })
            .collect();
        assert_eq!(calls, expected_calls, "{name}");
    }
}
