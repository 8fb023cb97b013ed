//! Python's text forms of values, which Meta's reference code writes into prompts: `json.dumps`
//! with its defaults (`", "`/`": "` separators, ASCII-only escapes, `repr` floats) and `str()` of
//! values in the `python_list` tool format; and a reader for the literals `ast.literal_eval`
//! accepts in parsed tool calls. Written here because no crate produces CPython's exact text.

use serde_json::{Map, Number, Value};

/// `repr(float)`: shortest round-trip digits, fixed notation for exponents in [-4, 16),
/// otherwise `d.ddde±XX`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = format!("{x:e}"); // shortest digits, e.g. "-1.5e-5"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{text}")
    } else {
        let rest = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{rest}e{esign}{:02}", &digits[..1], exp.abs())
    }
}

fn number_text(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => float_repr(f),
        _ => n.to_string(),
    }
}

/// `json.dumps(value)` with Python's defaults.
pub fn json_dumps(value: &Value) -> String {
    json_dumps_with(value, &DumpOptions::default())
}

/// The options of Python's `json.dumps` that chat templates use.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// Escape every character outside printable ASCII as `\uXXXX` (Python's default: true;
    /// transformers' `tojson` filter passes false).
    pub ensure_ascii: bool,
    /// Put each item on its own line, indented by this many spaces per level.
    pub indent: Option<usize>,
    /// Order object keys.
    pub sort_keys: bool,
    /// Item and key separators (default `", "` and `": "`, or `","` and `": "` with an indent).
    pub separators: Option<(String, String)>,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            ensure_ascii: true,
            indent: None,
            sort_keys: false,
            separators: None,
        }
    }
}

/// `json.dumps(value, ensure_ascii=…, indent=…, separators=…, sort_keys=…)`.
pub fn json_dumps_with(value: &Value, options: &DumpOptions) -> String {
    let (item, key) = match (&options.separators, options.indent) {
        (Some((item, key)), _) => (item.clone(), key.clone()),
        (None, Some(_)) => (",".to_string(), ": ".to_string()),
        (None, None) => (", ".to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    let writer = JsonWriter {
        options,
        item: &item,
        key: &key,
    };
    writer.value(value, 0, &mut out);
    out
}

struct JsonWriter<'a> {
    options: &'a DumpOptions,
    item: &'a str,
    key: &'a str,
}

impl JsonWriter<'_> {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(indent) = self.options.indent {
            out.push('\n');
            out.push_str(&" ".repeat(indent * level));
        }
    }

    fn value(&self, value: &Value, level: usize, out: &mut String) {
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&number_text(n)),
            Value::String(s) => self.string(s, out),
            Value::Array(items) if items.is_empty() => out.push_str("[]"),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item);
                    }
                    self.newline(level + 1, out);
                    self.value(item, level + 1, out);
                }
                self.newline(level, out);
                out.push(']');
            }
            Value::Object(map) if map.is_empty() => out.push_str("{}"),
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if self.options.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item);
                    }
                    self.newline(level + 1, out);
                    self.string(k, out);
                    out.push_str(self.key);
                    self.value(v, level + 1, out);
                }
                self.newline(level, out);
                out.push('}');
            }
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                // Python escapes control characters always, and with `ensure_ascii` everything
                // outside ' '..='~' (`[^\ -~]`), DEL included.
                c if (c as u32) < 0x20 || (self.options.ensure_ascii && (c as u32) > 0x7e) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A value as Meta's `python_list` tool format writes it: strings quoted without escapes,
/// `True`/`False`/`None`, lists `[a, b]`, dicts `{k=v, …}`.
pub fn python_list_value(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => number_text(n),
        Value::String(s) => format!("\"{s}\""),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_list_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{k}={}", python_list_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A call `name(key=literal, …)`: the name and its keyword arguments.
pub type Call = (String, Map<String, Value>);

/// A `[name(key=literal, …), …]` list of keyword-only calls: the calls, or `None` when the
/// text has another shape. `Err` when a value is not a literal (Python's `ValueError`).
pub fn parse_call_list(text: &str) -> Option<Result<Vec<Call>, String>> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    if !p.eat(b'[') {
        return None;
    }
    let mut calls = Vec::new();
    loop {
        p.ws();
        let name = p.ident()?;
        p.ws();
        if !p.eat(b'(') {
            return None;
        }
        let mut args = Map::new();
        loop {
            p.ws();
            if p.eat(b')') {
                break;
            }
            let key = p.ident()?;
            p.ws();
            if !p.eat(b'=') {
                return None; // a positional argument: not a tool call list
            }
            p.ws();
            match p.literal() {
                Ok(v) => args.insert(key, v),
                Err(Shape::NotLiteral) => {
                    return Some(Err(format!(
                        "argument `{}` of `{name}` is not a literal",
                        args.len()
                    )))
                }
                Err(Shape::Syntax) => return None,
            };
            p.ws();
            if p.eat(b',') {
                continue;
            }
            p.ws();
            if !p.eat(b')') {
                return None;
            }
            break;
        }
        calls.push((name, args));
        p.ws();
        if p.eat(b',') {
            continue;
        }
        if p.eat(b']') {
            break;
        }
        return None;
    }
    p.ws();
    (p.i == p.s.len() && !calls.is_empty()).then_some(Ok(calls))
}

enum Shape {
    NotLiteral,
    Syntax,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || self.s[self.i] == b'_'
                || self.s[self.i] >= 0x80)
        {
            self.i += 1;
        }
        let id = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        (!id.is_empty() && !id.as_bytes()[0].is_ascii_digit()).then(|| id.to_string())
    }

    fn literal(&mut self) -> Result<Value, Shape> {
        match self.s.get(self.i) {
            Some(b'"') | Some(b'\'') => self.string().map(Value::String),
            Some(b'[') | Some(b'(') => {
                let close = if self.s[self.i] == b'[' { b']' } else { b')' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.eat(close) {
                        return Ok(Value::Array(items));
                    }
                    items.push(self.literal()?);
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        return if self.eat(close) {
                            Ok(Value::Array(items))
                        } else {
                            Err(Shape::Syntax)
                        };
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut map = Map::new();
                loop {
                    self.ws();
                    if self.eat(b'}') {
                        return Ok(Value::Object(map));
                    }
                    let key = match self.literal()? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    self.ws();
                    if !self.eat(b':') {
                        return Err(Shape::Syntax);
                    }
                    self.ws();
                    map.insert(key, self.literal()?);
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        return if self.eat(b'}') {
                            Ok(Value::Object(map))
                        } else {
                            Err(Shape::Syntax)
                        };
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' || *c == b'+' || *c == b'.' => {
                self.number()
            }
            Some(_) => {
                let word = self.ident().ok_or(Shape::Syntax)?;
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    _ => Err(Shape::NotLiteral),
                }
            }
            None => Err(Shape::Syntax),
        }
    }

    fn number(&mut self) -> Result<Value, Shape> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || b"+-._".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i])
            .map_err(|_| Shape::Syntax)?
            .replace('_', "");
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Value::from(u));
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or(Shape::Syntax)
    }

    fn string(&mut self) -> Result<String, Shape> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            if c == quote {
                return String::from_utf8(out).map_err(|_| Shape::Syntax);
            }
            if c == b'\\' {
                let e = *self.s.get(self.i).ok_or(Shape::Syntax)?;
                self.i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'0' => out.push(0),
                    b'\\' | b'\'' | b'"' => out.push(e),
                    b'u' => {
                        let hex = std::str::from_utf8(
                            self.s.get(self.i..self.i + 4).ok_or(Shape::Syntax)?,
                        )
                        .map_err(|_| Shape::Syntax)?;
                        let ch = u32::from_str_radix(hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or(Shape::Syntax)?;
                        self.i += 4;
                        out.extend_from_slice(ch.to_string().as_bytes());
                    }
                    _ => {
                        out.push(b'\\');
                        out.push(e);
                    }
                }
            } else {
                out.push(c);
            }
        }
        Err(Shape::Syntax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        for (x, text) in [
            (3.0, "3.0"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e-5, "1e-05"),
            (-1.5, "-1.5"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (2.5e-7, "2.5e-07"),
        ] {
            assert_eq!(float_repr(x), text);
        }
    }

    #[test]
    fn json_dumps_escapes_like_python() {
        let v: Value = serde_json::from_str(r#"{"s": "São \"q\" 😀", "f": 2.0, "i": 3}"#).unwrap();
        assert_eq!(
            json_dumps(&v),
            r#"{"s": "S\u00e3o \"q\" \ud83d\ude00", "f": 2.0, "i": 3}"#
        );
        // Python: json.dumps("\x7f") == '"\\u007f"'.
        assert_eq!(json_dumps(&Value::String("\u{7f}".into())), r#""\u007f""#);
    }

    #[test]
    fn call_lists() {
        let calls = parse_call_list("[f(a=1, b='x'), g()]").unwrap().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1["b"], "x");
        assert!(parse_call_list("[f(\"x\")]").is_none());
        assert!(parse_call_list("f(a=1)").is_none());
        assert!(parse_call_list("[f(a=x)]").unwrap().is_err());
    }
}
