//! Text from files made safe to print: names read from a corrupt file (tensor names, labels,
//! URLs) may hold control characters that would move the cursor or change the terminal's
//! colours; they are shown escaped instead.

use std::borrow::Cow;
use std::path::Path;

/// `text` with control characters (and other invisible format characters) escaped as
/// `\u{…}`, `\n`, `\t`, `\r`; unchanged (and not copied) when it has none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `bytes` as printable text: UTF-8 with invalid bytes as U+FFFD, control characters escaped,
/// and at most `max_chars` characters (then `…`).
pub fn printable_bytes(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cut: String = text.chars().take(max_chars).collect();
    let more = text.chars().nth(max_chars).is_some();
    format!("{}{}", printable(&cut), if more { "…" } else { "" })
}

/// A path for messages, escaped like [`printable`].
pub fn printable_path(path: &Path) -> String {
    printable(&path.display().to_string()).into_owned()
}

/// Whether `bytes` look like a binary file rather than text: a NUL byte, or more than a tenth
/// of the first 4 KiB being control bytes other than whitespace (UTF-8 and Latin-1 text pass).
pub fn looks_binary(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    if head.contains(&0) {
        return true;
    }
    let control = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
        .count();
    control * 10 > head.len()
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_not_copied() {
        assert!(matches!(printable("model.layers.0"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[31mred\n"), "a\\u{1b}[31mred\\n");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("Größe"), "Größe");
        assert_eq!(printable_bytes(b"ab\xffcd\x07", 4), "ab\u{fffd}c…");
    }

    #[test]
    fn binary_files_are_told_from_text() {
        assert!(looks_binary(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert!(looks_binary(&[1u8, 2, 3, 4, 5, b'a', b'b']));
        assert!(!looks_binary("Bruneti\u{e8}re\n\tline two\r\n".as_bytes()));
        assert!(!looks_binary(b"Bruneti\xe8re (Latin-1)"));
        assert!(!looks_binary(b""));
    }
}
