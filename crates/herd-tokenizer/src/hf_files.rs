//! Meta's Llama 3 tokenizer as HF files (`tokenizer.json` + `tokenizer_config.json`), so that a
//! model folder herd writes loads whole in transformers (`AutoTokenizer`) and in the tools built
//! on it, with the ids of tiktoken.
//!
//! tiktoken stores ranks, HF's BPE stores merges. The conversion is transformers' own
//! (`TikTokenConverter`): tokens written in GPT-2's byte-to-character alphabet, and for every
//! token each split into two tokens of the vocabulary as a merge, ordered by the rank of the
//! token they make. With `ignore_merges` (a piece that is itself a token is taken whole, as
//! tiktoken does) and Meta's split pattern, the HF tokenizer gives tiktoken's ids.

use serde_json::{json, Value};

use crate::byte_level::{ByteLevelBpe, GgufVocab};
use crate::llama3::special;
use crate::tiktoken::Ranks;

/// A chat template for Meta's Llama 3 dialog format (`llama_models`' `ChatFormat`): BOS, then
/// per message its header, content and `<|eot_id|>`; with `add_generation_prompt`, the
/// assistant's header. (Tool calls are written by herd's own format, not by this template.)
pub const LLAMA3_CHAT_TEMPLATE: &str = "{{- bos_token }}\
{%- for message in messages %}\
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/// GPT-2's `bytes_to_unicode`: each byte as a printable character.
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(next).expect("below the surrogates");
            next += 1;
            c
        };
    }
    table
}

/// The vocabulary of tiktoken `ranks` (then `specials`, as control tokens) in byte-level form,
/// with merges as transformers' converter derives them.
fn tiktoken_vocab(ranks: &Ranks, specials: &[String]) -> GgufVocab {
    let alphabet = byte_alphabet();
    let text = |bytes: &[u8]| -> String { bytes.iter().map(|&b| alphabet[b as usize]).collect() };
    let mut by_rank: Vec<(&Vec<u8>, u32)> = ranks.iter().map(|(t, &r)| (t, r)).collect();
    by_rank.sort_by_key(|&(_, r)| r);
    let mut merges: Vec<(u32, u32, u32, String)> = Vec::new();
    for &(token, rank) in &by_rank {
        for split in 1..token.len() {
            let (left, right) = token.split_at(split);
            if let (Some(&l), Some(&r)) = (ranks.get(left), ranks.get(right)) {
                merges.push((rank, l, r, format!("{} {}", text(left), text(right))));
            }
        }
    }
    // By the rank of the merged token, then of its left and right parts.
    merges.sort_by_key(|m| (m.0, m.1, m.2));
    let mut tokens: Vec<String> = by_rank.iter().map(|(t, _)| text(t)).collect();
    let mut token_types = vec![1; tokens.len()];
    tokens.extend(specials.iter().cloned());
    token_types.extend(std::iter::repeat_n(3, specials.len()));
    GgufVocab {
        pre: Some("llama-bpe".into()),
        tokens,
        token_types,
        merges: merges.into_iter().map(|m| m.3).collect(),
    }
}

/// `tokenizer.json` for tiktoken `ranks` with Meta's specials: the byte-level BPE of
/// [`tiktoken_vocab`] and a post-processor that starts every sequence with BOS (HF's Llama 3
/// files do the same).
pub fn llama3_tokenizer_json(ranks: &Ranks, specials: &[String]) -> Result<Value, String> {
    let vocab = tiktoken_vocab(ranks, specials);
    let mut tokenizer = ByteLevelBpe::gguf_json(&vocab)?;
    let bos = special::BEGIN_OF_TEXT;
    let bos_id = ranks.len()
        + specials
            .iter()
            .position(|s| s == bos)
            .ok_or("no BOS token")?;
    tokenizer["post_processor"] = json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    });
    Ok(tokenizer)
}

/// `tokenizer_config.json` for a Llama 3 tokenizer: BOS and EOS, BOS added, the dialog chat
/// template, and decoding that leaves spaces as they are.
pub fn llama3_tokenizer_config() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": special::BEGIN_OF_TEXT,
        "eos_token": special::END_OF_TEXT,
        "add_bos_token": true,
        "clean_up_tokenization_spaces": false,
        "model_input_names": ["input_ids", "attention_mask"],
        "chat_template": LLAMA3_CHAT_TEMPLATE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'a' as usize], 'a');
        assert_eq!(a[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
