//! A task's prompt fields as the harness reads them: a field that names a column of the data is
//! that column's value; anything else is a Jinja template rendered with the document's columns
//! as variables (lm-evaluation-harness's environment: undefined variables are errors, trailing
//! newlines kept, a `regex_replace` filter, Python's string and list methods).

use anyhow::{anyhow, Result};
use minijinja::{Environment, UndefinedBehavior, Value as JinjaValue};
use serde_json::{Map, Value};

/// The most instructions one rendering may run (a task file is data a user downloaded).
const TEMPLATE_FUEL: u64 = 5_000_000;

/// A task field: a column name or a template.
#[derive(Debug, Clone)]
pub enum Field {
    /// A column of the data, taken as is.
    Column(String),
    /// A template, compiled under this name in [`Templates`].
    Template(String),
    /// A literal value from the task file (a list of choices, an index).
    Literal(Value),
}

/// The templates of one task, compiled once.
pub struct Templates {
    env: Environment<'static>,
    count: usize,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    /// An environment as the harness's `utils.env`.
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(python_methods);
        env.add_filter("regex_replace", regex_replace);
        Templates { env, count: 0 }
    }

    /// Reads a task file's value for a field: a string naming one of `columns` is a column, any
    /// other string a template (refused here if it does not parse), anything else a literal.
    pub fn field(&mut self, key: &str, value: &Value, columns: &[String]) -> Result<Field> {
        let Value::String(text) = value else {
            return Ok(Field::Literal(value.clone()));
        };
        if columns.iter().any(|c| c == text) {
            return Ok(Field::Column(text.clone()));
        }
        let name = format!("{key}#{}", self.count);
        self.count += 1;
        self.env
            .add_template_owned(name.clone(), text.clone())
            .map_err(|e| anyhow!("`{key}` is not a valid Jinja template: {e}"))?;
        Ok(Field::Template(name))
    }

    /// The field's value for `doc`: a column's value, a literal, or a template's text.
    pub fn resolve(&self, field: &Field, doc: &Map<String, Value>) -> Result<Value> {
        match field {
            Field::Column(c) => Ok(doc[c].clone()),
            Field::Literal(v) => Ok(v.clone()),
            Field::Template(name) => Ok(Value::String(self.render(name, doc)?)),
        }
    }

    /// Renders one template with the document's columns as variables.
    pub fn render(&self, name: &str, doc: &Map<String, Value>) -> Result<String> {
        let template = self.env.get_template(name).expect("compiled in field()");
        template
            .render(JinjaValue::from_serialize(doc))
            .map_err(|e| anyhow!("{}: {e}", name.split('#').next().unwrap_or(name)))
    }

    /// Renders a free-standing template string once (`description`, `gen_prefix`).
    pub fn render_str(&self, source: &str, doc: &Map<String, Value>) -> Result<String> {
        self.env
            .render_str(source, JinjaValue::from_serialize(doc))
            .map_err(|e| anyhow!("{source:?}: {e}"))
    }
}

/// `re.sub(pattern, repl, string, count)` as a filter (the harness's `regex_replace`).
fn regex_replace(
    string: String,
    pattern: String,
    repl: String,
    count: Option<usize>,
) -> Result<String, minijinja::Error> {
    let re = regex::Regex::new(&pattern).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("regex_replace: {e}"),
        )
    })?;
    // Python's `\1` group references are `${1}` for the regex crate.
    let repl = python_replacement(&repl);
    Ok(match count.unwrap_or(0) {
        0 => re.replace_all(&string, repl.as_str()).into_owned(),
        n => re.replacen(&string, n, repl.as_str()).into_owned(),
    })
}

/// A Python `re.sub` replacement string in the regex crate's syntax.
pub fn python_replacement(repl: &str) -> String {
    let mut out = String::with_capacity(repl.len());
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut group = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        group.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// Python methods on values: pycompat's string and dict methods, and `list.index`, which task
/// files use to turn a letter answer into a choice index (`choices.label.index(answerKey)`).
fn python_methods(
    state: &minijinja::State,
    value: &JinjaValue,
    method: &str,
    args: &[JinjaValue],
) -> Result<JinjaValue, minijinja::Error> {
    if method == "index" && value.as_object().is_some() && value.as_str().is_none() {
        let [wanted] = args else {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "index() takes one argument",
            ));
        };
        let items = value.try_iter()?;
        for (i, item) in items.enumerate() {
            if &item == wanted {
                return Ok(JinjaValue::from(i));
            }
        }
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("{wanted} is not in the list"),
        ));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn columns_templates_and_python_methods() {
        let d = doc(json!({
            "question": "Q?", "answer": "steps\n#### 42 ",
            "choices": {"label": ["A", "B"], "text": ["x", "y"]}, "answerKey": "B"
        }));
        let columns: Vec<String> = d.keys().cloned().collect();
        let mut t = Templates::new();
        let col = t
            .field("doc_to_text", &json!("question"), &columns)
            .unwrap();
        assert_eq!(t.resolve(&col, &d).unwrap(), json!("Q?"));
        let text = t
            .field(
                "doc_to_text",
                &json!("Question: {{question}}\nAnswer:"),
                &columns,
            )
            .unwrap();
        assert_eq!(
            t.resolve(&text, &d).unwrap(),
            json!("Question: Q?\nAnswer:")
        );
        let target = t
            .field(
                "doc_to_target",
                &json!("{{answer.split('####')[-1].strip()}}"),
                &columns,
            )
            .unwrap();
        assert_eq!(t.resolve(&target, &d).unwrap(), json!("42"));
        let index = t
            .field(
                "doc_to_target",
                &json!("{{choices.label.index(answerKey)}}"),
                &columns,
            )
            .unwrap();
        assert_eq!(t.resolve(&index, &d).unwrap(), json!("1"));
        let replaced = t
            .field(
                "doc_to_text",
                &json!(r#"{{question | regex_replace('(Q)\\?', '\\1!')}}"#),
                &columns,
            )
            .unwrap();
        assert_eq!(t.resolve(&replaced, &d).unwrap(), json!("Q!"));
    }

    #[test]
    fn undefined_variables_and_bad_templates_are_errors() {
        let d = doc(json!({"question": "Q?"}));
        let columns: Vec<String> = d.keys().cloned().collect();
        let mut t = Templates::new();
        let f = t
            .field("doc_to_text", &json!("{{questoin}}"), &columns)
            .unwrap();
        assert!(t.resolve(&f, &d).is_err());
        let err = t
            .field("doc_to_text", &json!("{{ open"), &columns)
            .unwrap_err();
        assert!(err.to_string().contains("doc_to_text"), "{err}");
    }
}
