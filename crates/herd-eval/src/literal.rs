//! Python literals, as `ast.literal_eval` reads them: the harness renders `doc_to_choice` and
//! list-shaped `doc_to_target` templates to text and evaluates that text as a Python literal
//! (`"{{choices}}"` renders a list). Lists, tuples, strings (either quote, Python escapes, and
//! the `\u{..}` escapes minijinja writes when it renders a list), integers, floats, `True`,
//! `False` and `None`.

use serde_json::Value;

/// Parses `text` as one Python literal; the error names the byte offset.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        at: 0,
    };
    let v = p.value()?;
    p.space();
    if p.at != p.s.len() {
        return Err(format!("unexpected text at byte {} of {text:?}", p.at));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {} of {:?}", self.at, self.text))
    }

    fn value(&mut self) -> Result<Value, String> {
        self.space();
        match self.s.get(self.at) {
            None => self.fail("a value is missing"),
            Some(b'[') => self.sequence(b']'),
            Some(b'(') => self.sequence(b')'),
            Some(b'\'') | Some(b'"') => self.string().map(Value::String),
            Some(c) if c.is_ascii_digit() || *c == b'-' || *c == b'+' || *c == b'.' => {
                self.number()
            }
            Some(_) => {
                for (word, value) in [
                    ("True", Value::Bool(true)),
                    ("False", Value::Bool(false)),
                    ("None", Value::Null),
                ] {
                    if self.s[self.at..].starts_with(word.as_bytes()) {
                        self.at += word.len();
                        return Ok(value);
                    }
                }
                self.fail("not a Python literal")
            }
        }
    }

    fn sequence(&mut self, close: u8) -> Result<Value, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.space();
            if self.s.get(self.at) == Some(&close) {
                self.at += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.space();
            match self.s.get(self.at) {
                Some(b',') => self.at += 1,
                Some(c) if *c == close => {}
                _ => return self.fail("expected `,` or the closing bracket"),
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        while self.at < self.s.len()
            && (self.s[self.at].is_ascii_alphanumeric() || b"+-._".contains(&self.s[self.at]))
        {
            self.at += 1;
        }
        let word = self.text[start..self.at].replace('_', "");
        if let Ok(i) = word.parse::<i64>() {
            return Ok(Value::from(i));
        }
        match word.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::from(f)),
            _ => {
                self.at = start;
                self.fail("not a number")
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.at];
        self.at += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.at..];
            let Some(c) = rest.chars().next() else {
                return self.fail("unterminated string");
            };
            self.at += c.len_utf8();
            if c as u32 == quote as u32 {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.text[self.at..].chars().next() else {
                return self.fail("unterminated escape");
            };
            self.at += e.len_utf8();
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '\\' | '\'' | '"' => out.push(e),
                '\n' => {}
                'x' => out.push(self.hex(2)?),
                'u' if self.s.get(self.at) == Some(&b'{') => {
                    let end = self.text[self.at..]
                        .find('}')
                        .map(|i| self.at + i)
                        .ok_or_else(|| format!("unterminated \\u{{ in {:?}", self.text))?;
                    let digits = &self.text[self.at + 1..end];
                    self.at = end + 1;
                    out.push(char_of(digits).ok_or_else(|| format!("bad escape \\u{{{digits}}}"))?);
                }
                'u' => out.push(self.hex(4)?),
                'U' => out.push(self.hex(8)?),
                other => {
                    // Python keeps unknown escapes as written.
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn hex(&mut self, digits: usize) -> Result<char, String> {
        let Some(hex) = self.text.get(self.at..self.at + digits) else {
            return self.fail("truncated escape");
        };
        self.at += digits;
        char_of(hex).ok_or_else(|| format!("bad escape {hex:?} in {:?}", self.text))
    }
}

fn char_of(hex: &str) -> Option<char> {
    u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_json::json;

    #[test]
    fn reads_python_and_minijinja_renderings_of_lists() {
        // str(["it's", 'a "b"', 'x\ny']) in Python, and minijinja's rendering of the same list.
        let python = r#"["it's", 'a "b"', 'x\ny', 'caf\xe9', 3, -2.5, True, None]"#;
        let minijinja = r#"["it's", "a \"b\"", "x\ny", "café", 3, -2.5, True, None]"#;
        let want = json!(["it's", "a \"b\"", "x\ny", "café", 3, -2.5, true, null]);
        assert_eq!(parse(python).unwrap(), want);
        assert_eq!(parse(minijinja).unwrap(), want);
        assert_eq!(parse("('a', )").unwrap(), json!(["a"]));
        assert_eq!(parse(r#""\u{1f}\U0001F600""#).unwrap(), json!("\u{1f}😀"));
        assert_eq!(parse(" 12 ").unwrap(), json!(12));
    }

    #[test]
    fn refuses_what_is_not_a_literal() {
        for bad in ["[1, 2", "foo", "'open", "[1,]x", ""] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
