//! Parsers for numeric flags: each refuses a value that makes no sense for the flag (NaN, a
//! negative rate, a probability above 1, a count of 0) when the command line is read, so clap
//! prints `invalid value 'nan' for '--temperature <TEMPERATURE>': …` before any work starts.

/// A finite number of 0 or more (temperatures, coefficients).
pub fn non_negative(text: &str) -> Result<f64, String> {
    let v = number(text)?;
    herd_util::check::finite_at_least("the value", v, 0.0).map(|_| v)
}

/// A finite number above 0 (rates, penalties, β).
pub fn positive(text: &str) -> Result<f64, String> {
    let v = number(text)?;
    herd_util::check::finite_above("the value", v, 0.0).map(|_| v)
}

/// A probability from 0 to 1.
pub fn probability(text: &str) -> Result<f64, String> {
    let v = number(text)?;
    herd_util::check::finite_within("the value", v, 0.0, 1.0).map(|_| v)
}

/// A probability above 0 and at most 1 (top-p).
pub fn nonzero_probability(text: &str) -> Result<f64, String> {
    let v = number(text)?;
    herd_util::check::finite_within("the value", v, f64::MIN_POSITIVE, 1.0).map(|_| v)
}

/// A share from 0 up to (not including) 1 (held-out fractions).
pub fn fraction(text: &str) -> Result<f64, String> {
    let v = probability(text)?;
    if v < 1.0 {
        Ok(v)
    } else {
        Err("the value must be below 1 (something has to be left to train on)".into())
    }
}

/// An OpenAI presence or frequency penalty: a finite number from -2 to 2.
pub fn openai_penalty(text: &str) -> Result<f32, String> {
    let v = number(text)?;
    herd_util::check::finite_within("the value", v, -2.0, 2.0).map(|_| v as f32)
}

/// [`non_negative`] as an f32.
pub fn non_negative_f32(text: &str) -> Result<f32, String> {
    non_negative(text).map(|v| v as f32)
}

/// [`positive`] as an f32.
pub fn positive_f32(text: &str) -> Result<f32, String> {
    positive(text).map(|v| v as f32)
}

/// [`probability`] as an f32.
pub fn probability_f32(text: &str) -> Result<f32, String> {
    probability(text).map(|v| v as f32)
}

/// [`nonzero_probability`] as an f32.
pub fn nonzero_probability_f32(text: &str) -> Result<f32, String> {
    nonzero_probability(text).map(|v| v as f32)
}

/// A count of at least 1.
pub fn count(text: &str) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    herd_util::check::at_least("the value", n, 1).map(|_| n)
}

fn number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonsense_values_are_refused() {
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("NaN").is_err());
        assert!(non_negative("-0.1").is_err());
        assert!(positive("0").is_err());
        assert!(positive("inf").is_err());
        assert!(probability("1.5").is_err());
        assert!(nonzero_probability("0").is_err());
        assert_eq!(nonzero_probability("1"), Ok(1.0));
        assert!(fraction("1").is_err());
        assert_eq!(count("3"), Ok(3));
        assert!(count("0").is_err());
        assert!(count("x").unwrap_err().contains("whole number"));
    }
}
