//! Llama 3.1 Instruct's Jinja chat template rendered by herd (minijinja) against transformers'
//! way of rendering it (jinja2 with transformers' environment and `tojson`; fixture by
//! tools/fixtures/make_template_fixture.py): dialogs with tools offered, a tool call and its
//! result, non-ASCII text — the same text, character for character.

use herd_tokenizer::chat::template::ChatTemplate;
use serde_json::Value;

#[test]
fn llama_3_1_template_renders_as_transformers_does() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/llama3_1_template.json"))
        .expect("the fixture parses");
    let Some(path) = herd_util::testing::asset(fixture["template_asset"].as_str().unwrap()) else {
        return;
    };
    let template = ChatTemplate::new(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
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
