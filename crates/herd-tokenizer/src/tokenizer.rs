//! One tokenizer type for every model herd runs: Meta's Llama 3 tiktoken BPE or a byte-level
//! BPE, with the ids that start and stop generation and the model's chat template.

use std::path::Path;

use serde_json::Value;

use crate::byte_level::{ByteLevelBpe, GgufVocab};
use crate::error::{Error, Result};
use crate::llama3::{self, Llama3Tokenizer};

/// Tokens that end a chat turn in Llama 3 (`<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>`) and
/// ChatML (`<|im_end|>`) templates.
const TURN_END_TOKENS: [&str; 4] = ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>"];

enum Backend {
    Llama3(Box<Llama3Tokenizer>),
    ByteLevel(Box<ByteLevelBpe>),
}

/// A tokenizer with its special ids and chat template.
pub struct Tokenizer {
    backend: Backend,
    bos: Option<u32>,
    add_bos: bool,
    stop: Vec<u32>,
    chat_template: Option<String>,
}

/// What a GGUF says about its tokenizer besides the vocabulary.
#[derive(Debug, Clone, Default)]
pub struct GgufTokenizerInfo {
    /// The vocabulary.
    pub vocab: GgufVocab,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`, `eot_token_id`, `eom_token_id`: ids that end generation.
    pub stop: Vec<u32>,
    /// `tokenizer.ggml.add_bos_token` (llama.cpp's default for BPE vocabularies: false).
    pub add_bos: Option<bool>,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: Option<String>,
}

impl Tokenizer {
    /// Meta's Llama 3 tokenizer from `tokenizer.model` (or a vocabulary `herd tokenizer train`
    /// wrote in the same format): BOS `<|begin_of_text|>` prepended, and
    /// generation stops at `<|end_of_text|>`, `<|eom_id|>` or `<|eot_id|>`.
    pub fn llama3(path: &Path) -> Result<Tokenizer> {
        let bpe = Llama3Tokenizer::from_file(path)?;
        let id = |name: &str| bpe.special_id(name).expect("one of the 256 special tokens");
        Ok(Tokenizer {
            bos: Some(id(llama3::special::BEGIN_OF_TEXT)),
            add_bos: true,
            stop: vec![
                id(llama3::special::END_OF_TEXT),
                id(llama3::special::EOM),
                id(llama3::special::EOT),
            ],
            chat_template: None,
            backend: Backend::Llama3(Box::new(bpe)),
        })
    }

    /// An HF `tokenizer.json`, with `tokenizer_config.json` beside it when present (BOS/EOS tokens,
    /// `add_bos_token`, `chat_template`).
    pub fn from_tokenizer_json(path: &Path) -> Result<Tokenizer> {
        let bpe = ByteLevelBpe::from_file(path)?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::format(&config_path, format!("not JSON: {e}")))?,
            Err(_) => Value::Null,
        };
        // Token fields are a string or an AddedToken object with `content`.
        let token = |key: &str| -> Option<u32> {
            let v = config.get(key)?;
            let text = v
                .as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))?;
            bpe.token_id(text)
        };
        let bos = token("bos_token");
        let stop: Vec<u32> = token("eos_token").into_iter().collect();
        let add_bos = config
            .get("add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(bos.is_some());
        let chat_template = config
            .get("chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Tokenizer {
            backend: Backend::ByteLevel(Box::new(bpe)),
            bos,
            add_bos,
            stop,
            chat_template,
        }
        .with_turn_end_tokens())
    }

    /// The tokenizer a GGUF embeds.
    pub fn from_gguf(info: GgufTokenizerInfo, source: &Path) -> Result<Tokenizer> {
        let bpe = ByteLevelBpe::from_gguf(&info.vocab).map_err(|m| Error::format(source, m))?;
        Ok(Tokenizer {
            backend: Backend::ByteLevel(Box::new(bpe)),
            bos: info.bos,
            add_bos: info.add_bos.unwrap_or(false),
            stop: info.stop,
            chat_template: info.chat_template,
        }
        .with_turn_end_tokens())
    }

    /// Also stops at the turn-ending tokens of the common chat templates the vocabulary has:
    /// chat models end a reply with one, and their config often names only the plain EOS.
    fn with_turn_end_tokens(mut self) -> Tokenizer {
        for token in TURN_END_TOKENS {
            if let Some(id) = self.token_id(token).filter(|id| !self.stop.contains(id)) {
                self.stop.push(id);
            }
        }
        self
    }

    /// Loads a tokenizer file: `tokenizer.model` (tiktoken ranks) or `tokenizer.json` (HF), or
    /// the one inside a model folder.
    pub fn from_path(path: &Path) -> Result<Tokenizer> {
        if path.is_dir() {
            // Meta's own file first: a folder herd writes has both, and the tiktoken ranks keep
            // Meta's dialog format for chat.
            for (file, json) in [("tokenizer.model", false), ("tokenizer.json", true)] {
                let candidate = path.join(file);
                if candidate.exists() {
                    return if json {
                        Self::from_tokenizer_json(&candidate)
                    } else {
                        Self::llama3(&candidate)
                    };
                }
            }
            return Err(Error::format(
                path,
                "no tokenizer.json or tokenizer.model in this folder",
            ));
        }
        let is_json = std::fs::read(path)
            .map_err(|e| Error::io(path, e))?
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            == Some(&b'{');
        if is_json {
            Self::from_tokenizer_json(path)
        } else {
            Self::llama3(path)
        }
    }

    /// Whether this is Meta's Llama 3 tokenizer (and so Meta's Llama 3.1 chat format applies).
    pub fn is_llama3(&self) -> bool {
        matches!(self.backend, Backend::Llama3(_))
    }

    /// Encodes `text` without BOS; special-token text is special only when `allow_special`.
    pub fn encode(&self, text: &str, allow_special: bool) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Llama3(t) => Ok(t.encode(text, allow_special)),
            Backend::ByteLevel(t) => t.encode(text, allow_special),
        }
    }

    /// Encodes `text` as the start of a sequence: with BOS when the model expects one.
    pub fn encode_prompt(&self, text: &str, allow_special: bool) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.prompt_bos().into_iter().collect();
        ids.extend(self.encode(text, allow_special)?);
        Ok(ids)
    }

    /// The BOS id a prompt starts with, when the tokenizer adds one (Llama 3 does; most
    /// byte-level GGUF vocabularies do not).
    pub fn prompt_bos(&self) -> Option<u32> {
        self.bos.filter(|_| self.add_bos)
    }

    /// Decodes ids to text; special tokens appear as their text, invalid UTF-8 as U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.backend {
            Backend::Llama3(t) => {
                let bytes = t.decode_bytes(ids).ok_or_else(|| {
                    let bad = ids
                        .iter()
                        .copied()
                        .find(|&id| t.decode_bytes(&[id]).is_none())
                        .unwrap_or(u32::MAX);
                    Error::UnknownId(bad)
                })?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Backend::ByteLevel(t) => t.decode(ids),
        }
    }

    /// The id of a token string (e.g. `<|eot_id|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Llama3(t) => {
                t.special_id(token)
                    .or_else(|| match t.encode(token, false).as_slice() {
                        [id] => Some(*id),
                        _ => None,
                    })
            }
            Backend::ByteLevel(t) => t.token_id(token),
        }
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Llama3(t) => t.vocab_size(),
            Backend::ByteLevel(t) => t.vocab_size(),
        }
    }

    /// The beginning-of-sequence id, if the tokenizer has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end a generated turn.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop
    }

    /// The model's Jinja chat template, when it carries one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The text of token `id` (for a template's `bos_token` and `eos_token`).
    pub fn token_text(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.decode(&[i]).ok()).unwrap_or_default()
    }

    /// Writes the tokenizer as HF files in `dir` — `tokenizer.json` and `tokenizer_config.json`
    /// (BOS, EOS, `add_bos_token`, `chat_template`) — so that transformers and the tools on it
    /// load the folder with the same ids as herd. Meta's Llama 3 tokenizer is converted from
    /// its ranks (see [`crate::hf_files`]); a byte-level one is written as it is. Returns the
    /// `tokenizer.json` path.
    pub fn save_hf(&self, dir: &Path) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("tokenizer.json");
        let config = match &self.backend {
            Backend::Llama3(t) => {
                let json = t.hf_tokenizer_json().map_err(Error::Other)?;
                write_json(&path, &json)?;
                crate::hf_files::llama3_tokenizer_config()
            }
            Backend::ByteLevel(bpe) => {
                bpe.save(&path)?;
                serde_json::json!({
                    "bos_token": self.bos.map(|id| self.token_text(Some(id))),
                    "eos_token": self.stop.first().map(|&id| self.token_text(Some(id))),
                    "add_bos_token": self.add_bos,
                    "chat_template": self.chat_template,
                })
            }
        };
        write_json(&dir.join("tokenizer_config.json"), &config)?;
        Ok(path)
    }
}

/// Writes `value` as pretty JSON, atomically.
fn write_json(path: &Path, value: &Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("JSON values serialize");
    Ok(herd_util::fs::write_atomic(path, &bytes)?)
}

/// Turns a stream of generated ids into text pieces as soon as they are complete UTF-8
/// (a character may span several tokens). Only the ids since the last emitted piece, plus that
/// piece's ids as context, are decoded per token, so streaming stays linear in the output length.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the decoding window: ids before it are emitted and not needed as context.
    window: usize,
    /// Ids before this index are emitted; `window..emitted` is context for the next piece.
    emitted: usize,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder with nothing generated yet.
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            ids: Vec::new(),
            window: 0,
            emitted: 0,
        }
    }

    /// The text the ids from `emitted` on add after the window's context.
    fn pending(&self) -> Result<String> {
        let context = self
            .tokenizer
            .decode(&self.ids[self.window..self.emitted])?;
        let text = self.tokenizer.decode(&self.ids[self.window..])?;
        Ok(text.get(context.len()..).unwrap_or_default().to_string())
    }

    /// Adds one id; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let piece = self.pending()?;
        if piece.is_empty() || piece.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        self.window = self.emitted;
        self.emitted = self.ids.len();
        Ok(Some(piece))
    }

    /// Whatever is left (an incomplete character comes out as U+FFFD).
    pub fn finish(self) -> Result<String> {
        self.pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_pieces_add_up_to_the_decoded_text() {
        // A byte-level vocabulary where "é" (2 bytes) is split over two tokens.
        let bytes: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
        let vocab = GgufVocab {
            pre: None,
            token_types: vec![1; bytes.len()],
            tokens: bytes,
            merges: Vec::new(),
        };
        let tokenizer = Tokenizer::from_gguf(
            GgufTokenizerInfo {
                vocab,
                ..Default::default()
            },
            Path::new("test"),
        )
        .unwrap();
        let ids = tokenizer.encode("héllo wörld", false).unwrap();
        let mut stream = StreamDecoder::new(&tokenizer);
        let mut pieces = Vec::new();
        for &id in &ids {
            pieces.extend(stream.push(id).unwrap());
        }
        pieces.push(stream.finish().unwrap());
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
        assert_eq!(pieces.concat(), tokenizer.decode(&ids).unwrap());
    }

    /// GPT-2's byte-to-character map.
    fn byte_char(b: u8) -> char {
        let printable = |b: u8| {
            (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
        };
        if printable(b) {
            return b as char;
        }
        let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + shifted).unwrap()
    }
}
