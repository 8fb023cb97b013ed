//! Web pages' bytes to text: the encoding from a byte-order mark, else the first `<meta>` that
//! declares one, else UTF-8 when the bytes are UTF-8, else Windows-1252 (what browsers assume for
//! undeclared Western pages). Decoding by `encoding_rs`, the WHATWG Encoding Standard's tables.

/// A page's bytes as text in its encoding: BOM, then the first `<meta charset>` /
/// `http-equiv` in the first 4 KB that names an encoding, else UTF-8, else Windows-1252.
pub fn decode(bytes: &[u8]) -> String {
    if let Some((encoding, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        return encoding
            .decode_without_bom_handling(&bytes[bom..])
            .0
            .into_owned();
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_ascii_lowercase();
    // Only `<meta>` tags declare the page's encoding (`<script charset>` is the script's).
    let declared = head.split("<meta").skip(1).find_map(|tag| {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let rest = tag[tag.find("charset=")? + 8..].trim_start_matches(['"', '\'', ' ']);
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        encoding_rs::Encoding::for_label(&rest.as_bytes()[..end])
    });
    match (declared, std::str::from_utf8(bytes)) {
        (_, Ok(text)) if declared.is_none_or(|e| e == encoding_rs::UTF_8) => text.to_string(),
        (Some(encoding), _) => encoding.decode_without_bom_handling(bytes).0.into_owned(),
        (None, _) => encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_honoured() {
        let latin1 = b"<html><head><meta charset=\"iso-8859-1\"></head><body><p>Br\xfcnnen, K\xf6ln, und so weiter, und so fort.</p></body></html>";
        assert!(decode(latin1).contains("Brünnen, Köln"));
        // A script's charset is the script's; the page's is in <meta>.
        let mut gbk = b"<html><head><script src=\"a.js\" charset=\"utf-8\"></script>\
            <meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\"></head><body><p>"
            .to_vec();
        gbk.extend(
            encoding_rs::GBK
                .encode("一个约定，信守15年，感人至深；一段真情，延续15年。")
                .0
                .iter(),
        );
        gbk.extend(b"</p></body></html>");
        assert!(
            decode(&gbk).contains("一个约定，信守15年"),
            "{}",
            decode(&gbk)
        );
        let utf8 = "<p>Grüße aus Köln, mit vielen Grüßen, und so weiter.</p>".as_bytes();
        assert!(decode(utf8).contains("Grüße aus Köln"));
    }
}
