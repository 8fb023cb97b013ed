//! Exactly the assistant tokens carry SFT loss, and exactly the non-formatting response tokens
//! carry DPO loss: in the Llama 3.1 format (with a vocabulary in Meta's format trained here; the
//! masks do not depend on which merges it has, and Meta's own ids are herd-tokenizer's tests)
//! and in SmolLM2's ChatML template from its GGUF.

use herd_align::conversation::Preference;
use herd_align::masks::{dpo_example, sft_example};
use herd_tokenizer::chat::llama3::encode_dialog_prompt;
use herd_tokenizer::chat::{Message, Role, StopReason, ToolCall, ToolPromptFormat};
use herd_tokenizer::Tokenizer;

/// A 700-token vocabulary in Meta's format (with its 256 special tokens), trained on a few
/// sentences.
fn tokenizer() -> Option<Tokenizer> {
    let texts = [
        "You are terse. Hi there. Hello. Weather in Paris? 18C, sunny. 18 °C and sunny.",
        "brave_search.call(query=\"weather Paris\") 2+2? 4 5, probably",
        "The quick brown fox jumps over the lazy dog. Numbers: 0123456789.",
    ];
    let ranks = herd_tokenizer::train::train_ranks(texts.iter(), 700, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.model");
    std::fs::write(&path, herd_tokenizer::train::ranks_file_text(&ranks)).unwrap();
    Some(Tokenizer::llama3(&path).unwrap())
}

#[test]
fn sft_loss_is_on_assistant_content_and_end_tokens_only() {
    let Some(tok) = tokenizer() else { return };
    let mut call = Message::new(Role::Assistant, "");
    call.tool_calls.push(ToolCall {
        call_id: String::new(),
        tool_name: "brave_search".into(),
        arguments: serde_json::json!({"query": "weather Paris"}),
    });
    call.stop_reason = Some(StopReason::EndOfMessage);
    let messages = vec![
        Message::new(Role::System, "You are terse."),
        Message::new(Role::User, "Hi <|eot_id|> there"),
        Message::new(Role::Assistant, "Hello."),
        Message::new(Role::User, "Weather in Paris?"),
        call,
        Message::new(Role::Ipython, "18C, sunny"),
        Message::new(Role::Assistant, "18 °C and sunny."),
    ];
    let masked = sft_example(&tok, &messages, ToolPromptFormat::Json).unwrap();
    // The ids are the reference ChatFormat's: the dialog prompt minus the trailing header.
    let mut prompt = encode_dialog_prompt(&tok, &messages, ToolPromptFormat::Json).unwrap();
    prompt.truncate(masked.ids.len());
    assert_eq!(masked.ids, prompt);
    let text = tok.decode(&masked.loss_ids()).unwrap();
    assert_eq!(
        text,
        "Hello.<|eot_id|>brave_search.call(query=\"weather Paris\")<|eom_id|>18 °C and sunny.<|eot_id|>"
    );
    let first = masked.loss.iter().position(|&l| l).unwrap();
    assert!(tok
        .decode(&masked.ids[..first])
        .unwrap()
        .ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
}

#[test]
fn dpo_loss_leaves_out_headers_and_end_tokens() {
    let Some(tok) = tokenizer() else { return };
    let pair = Preference {
        prompt: vec![Message::new(Role::User, "2+2?")],
        chosen: Message::new(Role::Assistant, "4"),
        rejected: Message::new(Role::Assistant, "5, probably"),
        edited: None,
    };
    let (prompt, chosen, rejected) = dpo_example(&tok, &pair, ToolPromptFormat::Json).unwrap();
    assert!(tok
        .decode(&prompt)
        .unwrap()
        .ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
    assert_eq!(tok.decode(&chosen.loss_ids()).unwrap(), "4");
    assert_eq!(tok.decode(&rejected.loss_ids()).unwrap(), "5, probably");
    assert_eq!(tok.decode(&rejected.ids).unwrap(), "5, probably<|eot_id|>");
}

/// SmolLM2's tokenizer and ChatML template, from its GGUF.
fn smollm2() -> Option<Tokenizer> {
    let path = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?;
    Some(herd_infer::loader::load_tokenizer(&path).unwrap())
}

#[test]
fn chatml_masks_come_from_the_models_template() {
    let Some(tok) = smollm2() else { return };
    let messages = vec![
        Message::new(Role::User, "Hi"),
        Message::new(Role::Assistant, "Hello there."),
        Message::new(Role::User, "2+2?"),
        Message::new(Role::Assistant, "4"),
    ];
    let masked = sft_example(&tok, &messages, ToolPromptFormat::Json).unwrap();
    // The ids are the template's rendering, tokenized whole.
    let chat = tok.chat_template().unwrap();
    let text = herd_tokenizer::chat::template::render(chat, &messages, false, "", "").unwrap();
    assert_eq!(masked.ids, tok.encode(&text, true).unwrap());
    assert_eq!(
        tok.decode(&masked.loss_ids()).unwrap(),
        "Hello there.<|im_end|>4<|im_end|>"
    );
    let pair = Preference {
        prompt: vec![Message::new(Role::User, "2+2?")],
        chosen: Message::new(Role::Assistant, "4"),
        rejected: Message::new(Role::Assistant, "5, probably"),
        edited: None,
    };
    let (prompt, chosen, rejected) = dpo_example(&tok, &pair, ToolPromptFormat::Json).unwrap();
    assert!(tok
        .decode(&prompt)
        .unwrap()
        .ends_with("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"));
    assert_eq!(tok.decode(&chosen.loss_ids()).unwrap(), "4");
    assert_eq!(tok.decode(&rejected.loss_ids()).unwrap(), "5, probably");
    assert_eq!(
        tok.decode(&rejected.ids).unwrap(),
        "5, probably<|im_end|>\n"
    );
}
