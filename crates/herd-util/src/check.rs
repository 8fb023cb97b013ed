//! Checks of numeric settings, made where a setting is read (a recipe key, a pipeline stage's
//! field, a command-line flag) so that a value that makes no sense — zero bands, a NaN learning
//! rate, a negative penalty, a size that would exhaust memory — is refused at once with its key,
//! never discovered hours later as a crash, a NaN model or a silently wrong result. Each returns
//! the message naming `key`; the caller adds the file and section.
//!
//! NaN fails every check: the comparisons are written so that NaN is never inside a range.

use std::fmt::Display;

/// `value ≥ min`.
pub fn at_least<T: PartialOrd + Display>(key: &str, value: T, min: T) -> Result<(), String> {
    if value >= min {
        Ok(())
    } else {
        Err(format!("`{key}` must be at least {min}, got {value}"))
    }
}

/// `min ≤ value ≤ max`.
pub fn within<T: PartialOrd + Display>(key: &str, value: T, min: T, max: T) -> Result<(), String> {
    if value >= min && value <= max {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must be between {min} and {max}, got {value}"
        ))
    }
}

/// A finite `value ≥ min`.
pub fn finite_at_least(key: &str, value: f64, min: f64) -> Result<(), String> {
    if value.is_finite() && value >= min {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must be a finite number of at least {min}, got {value}"
        ))
    }
}

/// A finite `value > min`.
pub fn finite_above(key: &str, value: f64, min: f64) -> Result<(), String> {
    if value.is_finite() && value > min {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must be a finite number above {min}, got {value}"
        ))
    }
}

/// `min ≤ value ≤ max` (and so finite).
pub fn finite_within(key: &str, value: f64, min: f64, max: f64) -> Result<(), String> {
    if value >= min && value <= max {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must be between {min} and {max}, got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_out_of_range_values_are_refused_with_their_key() {
        assert!(at_least("rows", 1usize, 1).is_ok());
        assert_eq!(
            at_least("rows", 0usize, 1).unwrap_err(),
            "`rows` must be at least 1, got 0"
        );
        assert!(within("bands", 100_000u32, 1, 1024)
            .unwrap_err()
            .contains("100000"));
        assert!(finite_above("peak_lr", f64::NAN, 0.0)
            .unwrap_err()
            .contains("NaN"));
        assert!(finite_above("peak_lr", -1e-3, 0.0).is_err());
        assert!(finite_above("peak_lr", f64::INFINITY, 0.0).is_err());
        assert!(finite_above("peak_lr", 3e-4, 0.0).is_ok());
        assert!(finite_at_least("weight_decay", 0.0, 0.0).is_ok());
        assert!(finite_within("top_p", f64::NAN, 0.0, 1.0).is_err());
        assert!(finite_within("top_p", 1.0, 0.0, 1.0).is_ok());
        assert!(finite_within("top_p", 1.5, 0.0, 1.0).is_err());
    }
}
