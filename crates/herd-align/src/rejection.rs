//! Rejection sampling (paper §4.2.2): for each prompt, K responses from the current policy
//! (batched on one KV cache, `herd_infer::batch`), scored by the reward model; the best one
//! becomes SFT data. The output is JSONL in OpenAI `messages` form with the rewards beside,
//! which `herd sft` reads back.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use herd_infer::batch::sample_many;
use herd_infer::engine::Engine;
use herd_infer::{GenerateConfig, SamplingConfig};
use herd_tokenizer::chat::{encode_chat, Message, Role, ToolPromptFormat};
use herd_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::masks::{sft_example, Masked};
use crate::reward::RewardModel;

/// How to sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionConfig {
    /// Responses per prompt (K).
    pub samples: usize,
    /// Most tokens per response.
    pub max_tokens: usize,
    /// Sampling temperature (the paper tunes it per round).
    pub temperature: f32,
    /// Nucleus sampling threshold.
    pub top_p: f32,
    /// Seed of the draws (prompt `i` uses `seed + K·i` …).
    pub seed: u64,
    /// Rows per reward-model pass.
    pub score_seq_len: usize,
}

impl RejectionConfig {
    /// Checks the settings: K and the lengths at least 1 (K up to 1,024), a finite temperature
    /// of 0 or more, top-p in (0, 1].
    pub fn validate(&self) -> std::result::Result<(), String> {
        use herd_util::check::{finite_at_least, finite_within, within};
        within("samples", self.samples, 1, 1024)?;
        within("max_tokens", self.max_tokens, 1, 1 << 20)?;
        finite_at_least("temperature", f64::from(self.temperature), 0.0)?;
        finite_within("top_p", f64::from(self.top_p), f64::MIN_POSITIVE, 1.0)?;
        within("score_seq_len", self.score_seq_len, 2, 1 << 24)
    }
}

impl Default for RejectionConfig {
    fn default() -> Self {
        RejectionConfig {
            samples: 4,
            max_tokens: 128,
            temperature: 0.8,
            top_p: 0.95,
            seed: 0,
            score_seq_len: 1024,
        }
    }
}

/// The best response of one prompt.
#[derive(Debug, Clone)]
pub struct Best {
    /// Prompt and the best reply.
    pub dialog: Vec<Message>,
    /// Its reward.
    pub reward: f64,
    /// Every sample's reward, in sample order.
    pub rewards: Vec<f64>,
}

/// What a run of rejection sampling did.
#[derive(Debug, Clone, Default)]
pub struct RejectionStats {
    /// Prompts sampled.
    pub prompts: usize,
    /// Responses generated.
    pub responses: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Seconds spent (sampling and scoring).
    pub seconds: f64,
    /// Mean reward of the kept responses.
    pub mean_best_reward: f64,
    /// Mean reward of all responses.
    pub mean_reward: f64,
}

/// Samples and keeps the best response for each of `prompts` — the K samples of a prompt
/// decoded together on `policy`'s engine; `on_prompt` is called after each (for a progress
/// bar).
pub fn rejection_sample(
    policy: &Engine,
    reward_model: &RewardModel,
    tokenizer: &Tokenizer,
    prompts: &[Vec<Message>],
    config: &RejectionConfig,
    mut on_prompt: impl FnMut(),
) -> Result<(Vec<Best>, RejectionStats)> {
    config.validate().map_err(Error::Invalid)?;
    let started = Instant::now();
    let format = ToolPromptFormat::Json;
    let stop_tokens = tokenizer.stop_ids().to_vec();
    let mut stats = RejectionStats::default();
    let (mut best_sum, mut all_sum) = (0.0, 0.0);
    let mut kept = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let ids = encode_chat(tokenizer, prompt)?;
        let generate = GenerateConfig {
            max_tokens: config.max_tokens,
            sampling: SamplingConfig {
                temperature: config.temperature,
                top_p: config.top_p,
                seed: config.seed.wrapping_add((i * config.samples) as u64),
                ..SamplingConfig::default()
            },
            stop_tokens: stop_tokens.clone(),
            top_logprobs: 0,
        };
        let samples = sample_many(policy, &ids, config.samples, &generate)
            .map_err(|e| Error::Sampling(e.to_string()))?;
        let mut dialogs = Vec::with_capacity(samples.len());
        for sample in &samples {
            stats.tokens += sample.ids.len();
            let mut dialog = prompt.clone();
            dialog.push(Message::new(
                Role::Assistant,
                tokenizer.decode(&sample.ids)?,
            ));
            dialogs.push(dialog);
        }
        let sequences: Vec<Masked> = dialogs
            .iter()
            .map(|d| sft_example(tokenizer, d, format))
            .collect::<std::result::Result<_, _>>()?;
        let refs: Vec<&Masked> = sequences.iter().collect();
        let rewards = reward_model.score(&refs, config.score_seq_len, refs.len())?;
        let top = (0..rewards.len())
            .max_by(|&a, &b| rewards[a].total_cmp(&rewards[b]))
            .expect("at least one sample");
        best_sum += rewards[top];
        all_sum += rewards.iter().sum::<f64>();
        stats.responses += rewards.len();
        kept.push(Best {
            dialog: dialogs.swap_remove(top),
            reward: rewards[top],
            rewards,
        });
        on_prompt();
    }
    stats.prompts = prompts.len();
    stats.seconds = started.elapsed().as_secs_f64();
    stats.mean_best_reward = best_sum / prompts.len().max(1) as f64;
    stats.mean_reward = all_sum / stats.responses.max(1) as f64;
    Ok((kept, stats))
}

/// Writes `best` as JSONL (`{"messages": […], "reward", "rewards"}`) to `path`, atomically.
pub fn write_jsonl(path: &Path, best: &[Best]) -> Result<()> {
    let mut text = Vec::new();
    for b in best {
        let messages: Vec<_> = b
            .dialog
            .iter()
            .map(|m| json!({"role": m.role.header(), "content": m.content}))
            .collect();
        let record = json!({"messages": messages, "reward": b.reward, "rewards": b.rewards});
        writeln!(text, "{record}").expect("writing to memory");
    }
    herd_util::fs::write_atomic(path, &text).map_err(Error::from)
}
