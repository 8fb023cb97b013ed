//! Needle in a haystack (paper §5.2, after Kamradt 2023): facts ("needles") hidden at a chosen
//! depth of a long text, and a question asking for them at the end. Run over a grid of context
//! lengths × depths, it shows where in its context a model stops finding things.
//!
//! A needle is a seven-digit "special magic number" for a key ("The special magic number for
//! {key} is: {number}."), so an answer is right when the number appears in it — no judge
//! needed. With several needles (the paper's multi-needle variant: four inserted, two asked
//! for) they are spread evenly from the depth to the end, and a cell's score is the share of
//! asked-for numbers retrieved. The haystack is the given text, repeated as needed, cut at the
//! token budget; needles go in at the sentence boundary nearest their depth (a space when no
//! sentence ends near it).

use anyhow::{bail, Result};
use herd_util::seeded::splitmix64;
use serde::Serialize;

use crate::model::{EvalModel, Generation};

/// Keys the needles are about.
const KEYS: [&str; 8] = [
    "Lisbon", "Nairobi", "Oslo", "Quito", "Hanoi", "Tunis", "Lima", "Perth",
];

/// Tokens kept free for the answer.
const ANSWER_TOKENS: usize = 24;

/// A needle-in-a-haystack run.
#[derive(Debug, Clone, Serialize)]
pub struct NeedleConfig {
    /// Context lengths in tokens (the whole prompt).
    pub lengths: Vec<usize>,
    /// Depths in percent of the haystack where the (first) needle goes.
    pub depths: Vec<f64>,
    /// Needles hidden per prompt.
    pub needles: usize,
    /// Needles asked for per prompt (at most `needles`).
    pub asked: usize,
    /// Seed of the numbers.
    pub seed: u64,
}

/// One cell of the grid.
#[derive(Debug, Clone, Serialize)]
pub struct NeedleCell {
    /// Context length (tokens asked for).
    pub length: usize,
    /// Depth in percent.
    pub depth: f64,
    /// Share of asked-for needles retrieved.
    pub score: f64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Where each needle went, in percent of the haystack's characters.
    pub placed_at: Vec<f64>,
    /// The numbers asked for.
    pub expected: Vec<String>,
    /// The model's answer.
    pub answer: String,
}

/// One prompt: its text and the numbers it asks for.
#[derive(Debug, Clone)]
pub struct NeedlePrompt {
    /// The whole prompt.
    pub text: String,
    /// The numbers the answer must hold.
    pub expected: Vec<String>,
    /// Where each needle starts, in characters of the haystack.
    pub needle_at: Vec<usize>,
    /// Characters of haystack in the prompt.
    pub haystack_chars: usize,
}

/// Builds the prompt of one cell: `haystack` cut so the prompt has about `length` tokens,
/// needles from `depth` percent on, the question at the end.
pub fn build_prompt(
    lm: &EvalModel,
    haystack: &str,
    length: usize,
    depth: f64,
    config: &NeedleConfig,
    cell_seed: u64,
) -> Result<NeedlePrompt> {
    if config.needles == 0 || config.needles > KEYS.len() {
        bail!("needles: between 1 and {}", KEYS.len());
    }
    if config.asked == 0 || config.asked > config.needles {
        bail!(
            "asked-for needles: between 1 and the needles ({})",
            config.needles
        );
    }
    let mut state = cell_seed;
    let numbers: Vec<String> = (0..config.needles)
        .map(|_| format!("{}", 1_000_000 + splitmix64(&mut state) % 9_000_000))
        .collect();
    let sentences: Vec<String> = numbers
        .iter()
        .zip(KEYS)
        .map(|(n, key)| format!(" The special magic number for {key} is: {n}."))
        .collect();
    let asked: Vec<usize> = (0..config.asked).collect();
    let keys: Vec<&str> = asked.iter().map(|&i| KEYS[i]).collect();
    let question = format!(
        "\n\nWhat {} the special magic {} for {} mentioned in the text above? The special magic \
         {} for {} mentioned in the text above {}",
        if keys.len() == 1 { "is" } else { "are" },
        if keys.len() == 1 { "number" } else { "numbers" },
        keys.join(" and "),
        if keys.len() == 1 { "number" } else { "numbers" },
        keys.join(" and "),
        if keys.len() == 1 { "is" } else { "are" },
    );
    let fixed = lm.encode(&(sentences.concat() + &question))?.len();
    let Some(budget) = length.checked_sub(fixed + ANSWER_TOKENS) else {
        bail!("a context of {length} tokens leaves no room for a haystack");
    };
    if haystack.trim().is_empty() {
        bail!("the haystack is empty");
    }
    // Enough text (repeated if short), then cut to the budget in tokens. Only a prefix of a
    // long haystack is tokenized.
    let mut chars = budget * 8;
    let cut = loop {
        let mut text = String::with_capacity(chars + haystack.len());
        while text.len() < chars {
            text.push_str(haystack);
            text.push(' ');
        }
        let end = (0..=chars)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let ids = lm.tokenizer().encode(&text[..end], false)?;
        if ids.len() >= budget || chars > budget * 64 {
            break lm.tokenizer().decode(&ids[..budget.min(ids.len())])?;
        }
        chars *= 2;
    };
    let hay: Vec<char> = cut.chars().collect();
    // Needles from the depth on, evenly to the end, each at the sentence end nearest its
    // place, or at the nearest space when no sentence ends within 5% of the haystack.
    let boundary = |j: usize, ends: &[char]| j == 0 || j == hay.len() || ends.contains(&hay[j - 1]);
    let nearest = |target: usize, ends: &[char]| {
        (0..=hay.len())
            .filter(|&j| boundary(j, ends))
            .min_by_key(|&j| j.abs_diff(target))
            .unwrap_or(0)
    };
    let slack = hay.len() / 20;
    let mut places = Vec::with_capacity(config.needles);
    for i in 0..config.needles {
        let fraction = depth / 100.0 + (1.0 - depth / 100.0) * i as f64 / config.needles as f64;
        let target = ((hay.len() as f64) * fraction).round() as usize;
        let mut at = nearest(target, &['.', '!', '?', '\n']);
        if at.abs_diff(target) > slack {
            at = nearest(target, &[' ', '\n']);
        }
        places.push(at.max(places.last().copied().unwrap_or(0)));
    }
    let mut prompt = String::new();
    let mut needle_at = Vec::new();
    let mut from = 0;
    for (place, sentence) in places.iter().zip(&sentences) {
        prompt.extend(&hay[from..*place]);
        needle_at.push(*place);
        prompt.push_str(sentence);
        from = *place;
    }
    prompt.extend(&hay[from..]);
    prompt.push_str(&question);
    Ok(NeedlePrompt {
        text: prompt,
        expected: asked.iter().map(|&i| numbers[i].clone()).collect(),
        needle_at,
        haystack_chars: hay.len(),
    })
}

/// Runs the grid: every length × depth cell, generated together on the engine; `progress` is
/// told the index of each cell that ends.
pub fn run(
    lm: &EvalModel,
    haystack: &str,
    config: &NeedleConfig,
    progress: impl FnMut(usize),
) -> Result<Vec<NeedleCell>> {
    if let Some(&too_long) = config.lengths.iter().find(|&&l| l > lm.max_length) {
        bail!(
            "a context of {too_long} tokens is longer than the model's ({})",
            lm.max_length
        );
    }
    let mut prompts = Vec::new();
    for (i, &length) in config.lengths.iter().enumerate() {
        for (j, &depth) in config.depths.iter().enumerate() {
            let seed = config.seed ^ ((i as u64) << 32 | j as u64);
            prompts.push((
                length,
                depth,
                build_prompt(lm, haystack, length, depth, config, seed)?,
            ));
        }
    }
    let until = vec!["\n".to_string()];
    let requests: Vec<Generation> = prompts
        .iter()
        .map(|(_, _, p)| Generation {
            context: &p.text,
            until: &until,
            max_gen_toks: ANSWER_TOKENS,
            sampling: Default::default(),
        })
        .collect();
    let answers = lm.generate_until(&requests, progress)?;
    let mut cells = Vec::with_capacity(prompts.len());
    for ((length, depth, prompt), answer) in prompts.into_iter().zip(answers) {
        let found = prompt
            .expected
            .iter()
            .filter(|n| answer.contains(n.as_str()))
            .count();
        cells.push(NeedleCell {
            length,
            depth,
            score: found as f64 / prompt.expected.len() as f64,
            prompt_tokens: lm.encode(&prompt.text)?.len(),
            placed_at: prompt
                .needle_at
                .iter()
                .map(|&at| 100.0 * at as f64 / prompt.haystack_chars.max(1) as f64)
                .collect(),
            expected: prompt.expected,
            answer,
        });
    }
    Ok(cells)
}
