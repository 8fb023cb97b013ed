//! Choosing the next token from logits: repetition penalty, OpenAI's presence and frequency
//! penalties, then temperature, top-k, top-p and min-p filtering, then a draw from a seeded
//! generator (or the arg-max when greedy).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of tokens already seen by this (1: off), as
    /// HF's `RepetitionPenaltyLogitsProcessor`.
    pub repetition_penalty: f32,
    /// Subtracted from the logit of every token this sampler has already produced (OpenAI's
    /// `presence_penalty`, in [-2, 2]; 0: off).
    #[serde(default)]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time this sampler has produced it (OpenAI's
    /// `frequency_penalty`, in [-2, 2]; 0: off).
    #[serde(default)]
    pub frequency_penalty: f32,
    /// Seed of the random draws.
    pub seed: u64,
}

impl SamplingConfig {
    /// Checks the values: a finite temperature of 0 or more, top-p in (0, 1], min-p in
    /// [0, 1], a finite repetition penalty above 0 (0 turned every seen token's logit to 0 or
    /// infinity: "TheTheThe").
    pub fn validate(&self) -> Result<(), String> {
        use herd_util::check::{finite_above, finite_at_least, finite_within};
        finite_at_least("temperature", f64::from(self.temperature), 0.0)?;
        finite_within("top_p", f64::from(self.top_p), f64::MIN_POSITIVE, 1.0)?;
        finite_within("min_p", f64::from(self.min_p), 0.0, 1.0)?;
        finite_above(
            "repetition_penalty",
            f64::from(self.repetition_penalty),
            0.0,
        )?;
        finite_within(
            "presence_penalty",
            f64::from(self.presence_penalty),
            -2.0,
            2.0,
        )?;
        finite_within(
            "frequency_penalty",
            f64::from(self.frequency_penalty),
            -2.0,
            2.0,
        )
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

/// A sampler with its random state and the tokens it has produced (for the presence and
/// frequency penalties, which OpenAI applies to the generated text only).
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
    produced: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler seeded from `config.seed`.
    pub fn new(config: SamplingConfig) -> Sampler {
        let rng = StdRng::seed_from_u64(config.seed);
        Sampler {
            config,
            rng,
            produced: std::collections::HashMap::new(),
        }
    }

    /// Picks the next token from `logits`, given the tokens of the context so far.
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let id = self.choose(logits, context);
        if self.config.presence_penalty != 0.0 || self.config.frequency_penalty != 0.0 {
            *self.produced.entry(id).or_default() += 1;
        }
        id
    }

    fn choose(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let c = &self.config;
        let mut logits = logits.to_vec();
        if c.repetition_penalty != 1.0 {
            let mut seen = context.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / c.repetition_penalty
                    } else {
                        *l * c.repetition_penalty
                    };
                }
            }
        }
        for (&t, &count) in &self.produced {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= c.presence_penalty + c.frequency_penalty * count as f32;
            }
        }
        if c.temperature <= 0.0 {
            return argmax(&logits);
        }
        // Candidates sorted by logit, most likely first; with top-k only those k are sorted.
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        if c.top_k > 0 && c.top_k < order.len() {
            order.select_nth_unstable_by(c.top_k - 1, by_logit);
            order.truncate(c.top_k);
        }
        order.sort_unstable_by(by_logit);
        let max = logits[order[0] as usize];
        let mut probs: Vec<f32> = order
            .iter()
            .map(|&t| ((logits[t as usize] - max) / c.temperature).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = c.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut draw = self.rng.random::<f32>() * total;
        for (i, p) in probs[..keep].iter().enumerate() {
            draw -= p;
            if draw <= 0.0 {
                return order[i];
            }
        }
        order[keep - 1]
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `log Σ exp(logits)`, in f64 for accuracy: `logit - log_sum_exp` is a log-probability.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// `log_softmax` of logits, in f64 for accuracy.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

/// The `k` most likely `(token, log-probability)` pairs.
pub fn top_k_logprobs(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut order: Vec<u32> = (0..logprobs.len() as u32).collect();
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    order.select_nth_unstable_by(k - 1, |&a, &b| {
        logprobs[b as usize].total_cmp(&logprobs[a as usize])
    });
    order.truncate(k);
    order.sort_unstable_by(|&a, &b| logprobs[b as usize].total_cmp(&logprobs[a as usize]));
    order
        .into_iter()
        .map(|t| (t, logprobs[t as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_make_no_sense_are_refused_by_name() {
        assert!(SamplingConfig::default().validate().is_ok());
        for (config, key) in [
            (
                SamplingConfig {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                SamplingConfig {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingConfig {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingConfig {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingConfig {
                    min_p: 1.5,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingConfig {
                    presence_penalty: 2.5,
                    ..Default::default()
                },
                "presence_penalty",
            ),
            (
                SamplingConfig {
                    frequency_penalty: f32::NAN,
                    ..Default::default()
                },
                "frequency_penalty",
            ),
        ] {
            let err = config.validate().unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn greedy_and_filters() {
        let logits = [1.0, 3.0, 2.0, -1.0];
        assert_eq!(
            Sampler::new(SamplingConfig::default()).sample(&logits, &[]),
            1
        );
        // Top-k 1 with temperature is greedy too.
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        });
        assert!((0..20).all(|_| s.sample(&logits, &[]) == 1));
        // A strong repetition penalty moves greedy off token 1.
        let mut s = Sampler::new(SamplingConfig {
            repetition_penalty: 10.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[1]), 2);
        // min-p keeps only tokens within the factor of the best.
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            min_p: 0.5,
            seed: 7,
            ..Default::default()
        });
        assert!((0..50).all(|_| [1, 2].contains(&s.sample(&logits, &[]))));
        // top-p 0.5 keeps just the best here (p = 0.66).
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_p: 0.5,
            seed: 3,
            ..Default::default()
        });
        assert!((0..50).all(|_| s.sample(&logits, &[]) == 1));
    }

    #[test]
    fn presence_and_frequency_penalties_count_what_was_produced() {
        let logits = [0.0, 2.0, 1.5, 1.2];
        // Presence 1: token 1 once produced falls below token 2 (2 - 1 < 1.5).
        let mut s = Sampler::new(SamplingConfig {
            presence_penalty: 1.0,
            ..Default::default()
        });
        assert_eq!(
            (0..3).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // Frequency 0.3: each production costs 0.3 more; the context (prompt) is not counted.
        let mut s = Sampler::new(SamplingConfig {
            frequency_penalty: 0.3,
            ..Default::default()
        });
        assert_eq!(
            (0..4)
                .map(|_| s.sample(&logits, &[1, 1, 1]))
                .collect::<Vec<_>>(),
            [1, 1, 2, 1]
        );
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let draws = |seed| {
            let mut s = Sampler::new(SamplingConfig {
                temperature: 1.0,
                seed,
                ..Default::default()
            });
            (0..30).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draws(5), draws(5));
        assert_ne!(draws(5), draws(6));
    }

    #[test]
    fn logprobs_normalise() {
        let lp = log_softmax(&[0.0, 1.0, 2.0]);
        assert!((lp.iter().map(|l| l.exp()).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(
            top_k_logprobs(&lp, 2)
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            vec![2, 1]
        );
    }
}
