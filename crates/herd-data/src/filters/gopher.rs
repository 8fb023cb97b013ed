//! Gopher's quality rules (Rae et al. 2021, appendix A.1.1), with its thresholds as defaults:
//! a document is kept when it has 50 to 100,000 words of mean length 3 to 10 characters, fewer
//! than 0.1 `#` or ellipses per word, fewer than 90% of lines starting with a bullet and 30%
//! ending with an ellipsis, at least 80% of words with a letter, and at least two of the stop
//! words "the, be, to, of, and, that, have, with".

use serde::{Deserialize, Serialize};

use super::{words, Verdict};

const STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];
const BULLETS: [char; 5] = ['•', '●', '*', '-', '‣'];

/// The thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GopherQuality {
    /// Fewest words.
    pub min_words: usize,
    /// Most words.
    pub max_words: usize,
    /// Shortest mean word length (characters).
    pub min_mean_word_length: f64,
    /// Longest mean word length.
    pub max_mean_word_length: f64,
    /// Most `#` and ellipses per word.
    pub max_symbol_word_ratio: f64,
    /// Most lines starting with a bullet, as a share of lines.
    pub max_bullet_lines: f64,
    /// Most lines ending with an ellipsis, as a share of lines.
    pub max_ellipsis_lines: f64,
    /// Fewest words containing a letter, as a share of words.
    pub min_alphabetic_words: f64,
    /// Fewest stop words.
    pub min_stop_words: usize,
}

impl Default for GopherQuality {
    fn default() -> Self {
        GopherQuality {
            min_words: 50,
            max_words: 100_000,
            min_mean_word_length: 3.0,
            max_mean_word_length: 10.0,
            max_symbol_word_ratio: 0.1,
            max_bullet_lines: 0.9,
            max_ellipsis_lines: 0.3,
            min_alphabetic_words: 0.8,
            min_stop_words: 2,
        }
    }
}

impl GopherQuality {
    /// Checks the thresholds: shares between 0 and 1, word lengths that are finite, and each
    /// lower bound no higher than its upper one.
    pub fn validate(&self) -> Result<(), String> {
        use herd_util::check::{at_least, finite_at_least, finite_within};
        at_least("max_words", self.max_words, self.min_words)?;
        finite_at_least("min_mean_word_length", self.min_mean_word_length, 0.0)?;
        finite_at_least(
            "max_mean_word_length",
            self.max_mean_word_length,
            self.min_mean_word_length,
        )?;
        finite_at_least("max_symbol_word_ratio", self.max_symbol_word_ratio, 0.0)?;
        for (key, share) in [
            ("max_bullet_lines", self.max_bullet_lines),
            ("max_ellipsis_lines", self.max_ellipsis_lines),
            ("min_alphabetic_words", self.min_alphabetic_words),
        ] {
            finite_within(key, share, 0.0, 1.0)?;
        }
        Ok(())
    }

    /// Applies the rules to `text`, the first failing one giving the reason.
    pub fn check(&self, text: &str) -> Verdict {
        let words = words(text);
        let n = words.len();
        if n < self.min_words {
            return Verdict::Drop("gopher_short_document");
        }
        if n > self.max_words {
            return Verdict::Drop("gopher_long_document");
        }
        let mean = words.iter().map(|w| w.chars().count()).sum::<usize>() as f64 / n as f64;
        if mean < self.min_mean_word_length || mean > self.max_mean_word_length {
            return Verdict::Drop("gopher_mean_word_length");
        }
        let symbols =
            text.matches('#').count() + text.matches("...").count() + text.matches('…').count();
        if symbols as f64 / n as f64 > self.max_symbol_word_ratio {
            return Verdict::Drop("gopher_symbol_word_ratio");
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let share = |pred: &dyn Fn(&str) -> bool| {
            lines.iter().filter(|l| pred(l)).count() as f64 / lines.len().max(1) as f64
        };
        if share(&|l| l.trim_start().starts_with(BULLETS)) > self.max_bullet_lines {
            return Verdict::Drop("gopher_bullet_lines");
        }
        if share(&|l| {
            let l = l.trim_end();
            l.ends_with("...") || l.ends_with('…')
        }) > self.max_ellipsis_lines
        {
            return Verdict::Drop("gopher_ellipsis_lines");
        }
        let alphabetic = words
            .iter()
            .filter(|w| w.chars().any(char::is_alphabetic))
            .count();
        if (alphabetic as f64 / n as f64) < self.min_alphabetic_words {
            return Verdict::Drop("gopher_non_alphabetic_words");
        }
        let stop = words
            .iter()
            .filter(|w| STOP_WORDS.contains(&w.to_lowercase().as_str()))
            .count();
        if stop < self.min_stop_words {
            return Verdict::Drop("gopher_stop_words");
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROSE: &str = "The history of the river is long and the people who lived with it \
        have told stories of floods, of harvests and of the boats that came up from the sea to \
        trade salt and cloth. Each spring the water rose to the edge of the town, and each \
        autumn it fell back to leave the fields rich and dark with mud that the farmers prized.";

    #[test]
    fn prose_passes_and_each_rule_can_fail() {
        let g = GopherQuality::default();
        assert_eq!(g.check(PROSE), Verdict::Keep);
        assert_eq!(
            g.check("the cat and the dog"),
            Verdict::Drop("gopher_short_document")
        );
        let hashtags = format!("{PROSE} {}", "#tag ".repeat(20));
        assert_eq!(
            g.check(&hashtags),
            Verdict::Drop("gopher_symbol_word_ratio")
        );
        let bullets = (0..60)
            .map(|i| format!("- item number {i} of the list\n"))
            .collect::<String>();
        assert_eq!(g.check(&bullets), Verdict::Drop("gopher_bullet_lines"));
        let numbers = (0..80).map(|i| format!("{i} ")).collect::<String>() + "the and of";
        assert_eq!(g.check(&numbers), Verdict::Drop("gopher_mean_word_length"));
        let no_stop = "Lorem ipsum dolor sit amet consectetur adipiscing elit sed do ".repeat(6);
        assert_eq!(g.check(&no_stop), Verdict::Drop("gopher_stop_words"));
        let digits = format!("{PROSE} {}", "1234 5678 9012 ".repeat(20));
        assert_eq!(
            g.check(&digits),
            Verdict::Drop("gopher_non_alphabetic_words")
        );
    }
}
