//! GPT-2-style byte-level BPE (SmolLM2, the HF Llama 3 files, most GGUFs): from an HF
//! `tokenizer.json`, or from the vocabulary a GGUF embeds (`tokenizer.ggml.*`). The BPE is the
//! `tokenizers` crate's, so ids are exactly HF's; GGUF vocabularies are turned into the same
//! `tokenizer.json` form, with the pre-tokenizer llama.cpp uses for their `tokenizer.ggml.pre`.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::llama3;

/// A byte-level BPE tokenizer with and without matching of special-token text.
pub struct ByteLevelBpe {
    /// Matches special tokens in the text (for rendered chat templates).
    with_specials: tokenizers::Tokenizer,
    /// Encodes all text as plain text.
    plain: tokenizers::Tokenizer,
}

/// A GGUF's embedded vocabulary (`tokenizer.ggml.*` metadata) for a `gpt2`-model tokenizer.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.pre`: the pre-tokenizer llama.cpp applies (`gpt2`, `smollm`, `llama-bpe`…).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, in id order.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (1 normal, 3 control, 4 user-defined…), same order.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, as `"left right"`.
    pub merges: Vec<String>,
}

impl ByteLevelBpe {
    /// Loads an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<ByteLevelBpe> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not JSON: {e}")))?;
        Self::from_json(value).map_err(|m| Error::format(path, m))
    }

    /// Builds the tokenizer for a GGUF vocabulary.
    pub fn from_gguf(vocab: &GgufVocab) -> std::result::Result<ByteLevelBpe, String> {
        Self::from_json(Self::gguf_json(vocab)?)
    }

    /// The HF `tokenizer.json` (as a JSON value) of a GGUF-style vocabulary: byte-level tokens,
    /// merges, control and user-defined tokens as added tokens, and the pre-tokenizer llama.cpp
    /// uses for `pre`.
    pub fn gguf_json(vocab: &GgufVocab) -> std::result::Result<Value, String> {
        let pre = vocab.pre.as_deref().unwrap_or("default");
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        // llama.cpp's `llama_vocab` pre-tokenizers, as the equivalent HF components.
        let (pre_tokenizer, ignore_merges) = match pre {
            "default" | "gpt2" | "gpt-2" => (byte_level(true), false),
            "smollm" => (
                json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
                false,
            ),
            "llama-bpe" | "llama3" => (
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": llama3::PATTERN}, "behavior": "Isolated", "invert": false},
                    byte_level(false)]}),
                true,
            ),
            other => {
                return Err(format!(
                    "GGUF pre-tokenizer `{other}` is not supported (gpt2, smollm, llama-bpe are)"
                ))
            }
        };
        let vocab_map: serde_json::Map<String, Value> = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<Value> = vocab
            .tokens
            .iter()
            .zip(&vocab.token_types)
            .enumerate()
            .filter(|(_, (_, &kind))| kind == 3 || kind == 4)
            .map(|(id, (content, &kind))| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": kind == 3}))
            .collect();
        Ok(json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": ignore_merges, "vocab": vocab_map, "merges": vocab.merges},
        }))
    }

    /// Builds the tokenizer from a `tokenizer.json` value.
    fn from_json(mut value: Value) -> std::result::Result<ByteLevelBpe, String> {
        let parse = |v: &Value| {
            tokenizers::Tokenizer::from_bytes(v.to_string())
                .map_err(|e| format!("not a usable tokenizer.json: {e}"))
        };
        let with_specials = parse(&value)?;
        // Without the added tokens, special-token text is ordinary text for the BPE.
        value["added_tokens"] = json!([]);
        let plain = parse(&value)?;
        Ok(ByteLevelBpe {
            with_specials,
            plain,
        })
    }

    /// Encodes `text`; special-token text becomes special ids only when `allow_special` is set.
    /// No BOS is added here (the caller decides).
    pub fn encode(&self, text: &str, allow_special: bool) -> Result<Vec<u32>> {
        let tokenizer = if allow_special {
            &self.with_specials
        } else {
            &self.plain
        };
        let encoding = tokenizer
            .encode(text, false)
            .map_err(|e| Error::Other(format!("tokenization failed: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids to text, special tokens included (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| self.with_specials.id_to_token(id).is_none())
        {
            return Err(Error::UnknownId(bad));
        }
        self.with_specials
            .decode(ids, false)
            .map_err(|e| Error::Other(format!("decoding failed: {e}")))
    }

    /// Writes the HF `tokenizer.json` (special tokens included).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.with_specials
            .save(path, false)
            .map_err(|e| Error::format(path, format!("cannot write: {e}")))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.with_specials.get_vocab_size(true)
    }

    /// The id of a token string (special tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.with_specials.token_to_id(token)
    }
}
