//! Post-training in rounds (paper §4.1, Figure 7), as a recipe (`recipes/posttrain-*.toml`)
//! says: a reward model on the preference pairs, then per round rejection sampling from the
//! current policy, SFT on the best samples (plus curated conversations), and DPO on the pairs;
//! each round starts from the last round's DPO model.
//!
//! ```text
//! OUT/reward/               the reward model (the pairs do not change between rounds, so it
//!                           is trained once; with new annotations it would be retrained)
//! OUT/round-1/rejection.jsonl   best samples        OUT/round-1/sft/   OUT/round-1/dpo/
//! OUT/round-2/…
//! ```
//!
//! With `--resume` finished stages (those with a `final/` model, or the samples file) are
//! kept and an interrupted one continues from its last checkpoint.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dpo::DpoConfig;
use crate::error::{Error, Result};
use crate::fit::TrainConfig;
use crate::rejection::RejectionConfig;
use crate::stages;
use herd_train::RunOptions;
use herd_util::fs::{expand_home, Existing, RunDir};

/// A post-training recipe.
#[derive(Debug, Clone)]
pub struct PosttrainRecipe {
    /// The file it was read from.
    pub path: PathBuf,
    /// Name.
    pub name: String,
    /// The pretrained model folder the first round starts from.
    pub base: PathBuf,
    /// Rounds of rejection sampling, SFT and DPO.
    pub rounds: usize,
    /// Share of prompts held out (by prompt hash) for evaluation.
    pub held_out_fraction: f64,
    /// Data files.
    pub data: DataSection,
    /// Reward-model training.
    pub reward: TrainConfig,
    /// Rejection sampling.
    pub rejection: RejectionConfig,
    /// SFT.
    pub sft: TrainConfig,
    /// DPO training.
    pub dpo: TrainConfig,
    /// DPO's β and NLL coefficient.
    pub dpo_loss: DpoConfig,
    /// A hash of every setting (the file's TOML): the run folder records it and resumes only
    /// under the same recipe.
    pub fingerprint: String,
}

/// `[data]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Preference files (reward model and DPO).
    pub preferences: Vec<PathBuf>,
    /// Curated conversations added to every round's SFT data.
    #[serde(default)]
    pub sft: Vec<PathBuf>,
    /// Files whose prompts are sampled (default: the preference files); held-out prompts are
    /// never sampled.
    #[serde(default)]
    pub prompts: Vec<PathBuf>,
    /// Prompts per round (each round takes the next ones, wrapping around).
    pub prompts_per_round: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: String,
    #[serde(default)]
    description: String,
    base: PathBuf,
    rounds: usize,
    held_out_fraction: f64,
    data: DataSection,
    #[serde(default)]
    reward: toml::Table,
    #[serde(default)]
    rejection: toml::Table,
    #[serde(default)]
    sft: toml::Table,
    #[serde(default)]
    dpo: toml::Table,
}

/// SFT's defaults: the paper's learning rate (1e-5), rows of 2K tokens.
pub fn sft_defaults() -> TrainConfig {
    TrainConfig {
        steps: 200,
        batch: 16,
        micro_batch: 4,
        seq_len: 2048,
        lr: 1e-5,
        min_lr: 1e-6,
        warmup_steps: 10,
        weight_decay: 0.0,
        grad_clip: 1.0,
        eval_every: 50,
        checkpoint_every: 50,
        keep_last: 2,
        seed: 0,
    }
}

/// Reward-model defaults (as SFT's; one epoch-ish over small preference sets).
pub fn reward_defaults() -> TrainConfig {
    TrainConfig {
        micro_batch: 4,
        ..sft_defaults()
    }
}

/// DPO defaults: the paper's learning rate 1e-5.
pub fn dpo_defaults() -> TrainConfig {
    TrainConfig {
        steps: 100,
        micro_batch: 4,
        ..sft_defaults()
    }
}

/// `defaults` with the keys of `table` over them; an unknown key is an error naming `section`.
pub fn overlay<T: Serialize + DeserializeOwned>(
    defaults: &T,
    table: toml::Table,
    section: &str,
) -> std::result::Result<T, String> {
    let mut merged = toml::Table::try_from(defaults).map_err(|e| e.to_string())?;
    merged.extend(table);
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| format!("[{section}]: {}", e.message()))
}

impl PosttrainRecipe {
    /// Reads and checks a recipe file.
    pub fn load(path: &Path) -> Result<PosttrainRecipe> {
        let bad = |message: String| Error::Recipe {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: RecipeFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let settings: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let fingerprint = herd_util::fingerprint::of_json(
            &serde_json::to_value(&settings).expect("TOML is JSON"),
        );
        let _ = file.description;
        let mut dpo_table = file.dpo;
        let mut dpo_loss = DpoConfig::default();
        for (key, slot) in [
            ("beta", &mut dpo_loss.beta),
            ("nll_coefficient", &mut dpo_loss.nll_coefficient),
        ] {
            if let Some(v) = dpo_table.remove(key) {
                *slot = v
                    .as_float()
                    .ok_or_else(|| bad(format!("[dpo]: {key} is not a number")))?;
            }
        }
        let mut data = file.data;
        for list in [&mut data.preferences, &mut data.sft, &mut data.prompts] {
            list.iter_mut().for_each(|p| *p = expand_home(p));
        }
        let recipe = PosttrainRecipe {
            path: path.to_path_buf(),
            name: file.name,
            base: expand_home(&file.base),
            rounds: file.rounds,
            held_out_fraction: file.held_out_fraction,
            reward: overlay(&reward_defaults(), file.reward, "reward").map_err(bad)?,
            rejection: overlay(&RejectionConfig::default(), file.rejection, "rejection")
                .map_err(bad)?,
            sft: overlay(&sft_defaults(), file.sft, "sft").map_err(bad)?,
            dpo: overlay(&dpo_defaults(), dpo_table, "dpo").map_err(bad)?,
            data,
            dpo_loss,
            fingerprint,
        };
        if recipe.rounds == 0 || recipe.data.preferences.is_empty() {
            return Err(bad("needs rounds ≥ 1 and [data] preferences".into()));
        }
        if !(0.0..1.0).contains(&recipe.held_out_fraction) {
            return Err(bad("held_out_fraction must be in [0, 1)".into()));
        }
        for (section, config) in [
            ("reward", &recipe.reward),
            ("sft", &recipe.sft),
            ("dpo", &recipe.dpo),
        ] {
            config
                .validate()
                .map_err(|m| bad(format!("[{section}] {m}")))?;
        }
        recipe
            .dpo_loss
            .validate()
            .map_err(|m| bad(format!("[dpo] {m}")))?;
        recipe
            .rejection
            .validate()
            .map_err(|m| bad(format!("[rejection] {m}")))?;
        Ok(recipe)
    }
}

/// What the rounds produced.
#[derive(Debug, Clone)]
pub struct RoundsSummary {
    /// The last round's DPO model.
    pub final_model: PathBuf,
    /// Per round: (responses sampled, responses per second, mean best reward, mean reward).
    pub rejection: Vec<(usize, f64, f64, f64)>,
}

/// Runs (or with `resume`, continues) `recipe` into `out`.
pub fn posttrain(
    recipe: &PosttrainRecipe,
    out: &Path,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> Result<RoundsSummary> {
    let existing = Existing::from_flags(resume, overwrite)?;
    let fingerprint = serde_json::json!({"recipe": recipe.fingerprint});
    RunDir::open(out, "posttrain", &fingerprint, existing)?;
    // Each stage's folder belongs to this run: it is continued where it stopped (its own
    // fingerprint still has to match).
    let stage = |dir: PathBuf| RunOptions {
        resume: true,
        overwrite: false,
        out: dir,
        max_steps: None,
        progress,
    };
    let announce = |text: &str| {
        if progress {
            eprintln!("== {} · {text}", recipe.name);
        }
    };
    let h = recipe.held_out_fraction;
    let held_out = stages::HeldOut::Fraction(h);
    let reward = out.join("reward");
    if !reward.join("final").exists() {
        announce("reward model");
        stages::reward_model(
            &recipe.base,
            &recipe.data.preferences,
            &recipe.reward,
            &held_out,
            &stage(reward.clone()),
        )?;
    }
    let prompt_files = if recipe.data.prompts.is_empty() {
        &recipe.data.preferences
    } else {
        &recipe.data.prompts
    };
    let all_prompts = stages::prompts_of(prompt_files, progress)?;
    let (prompts, _) = stages::split_by_prompt(all_prompts, |p| p.as_slice(), h);
    if prompts.is_empty() {
        return Err(Error::Invalid("no training prompts to sample".into()));
    }
    let mut policy = recipe.base.clone();
    let mut rejection = Vec::new();
    for round in 1..=recipe.rounds {
        let dir = out.join(format!("round-{round}"));
        let samples = dir.join("rejection.jsonl");
        if !samples.exists() {
            announce(&format!("round {round}: rejection sampling"));
            let n = recipe.data.prompts_per_round.max(1);
            let chosen: Vec<_> = (0..n)
                .map(|i| prompts[((round - 1) * n + i) % prompts.len()].clone())
                .collect();
            let config = RejectionConfig {
                seed: recipe.rejection.seed + round as u64 * 1_000_003,
                ..recipe.rejection.clone()
            };
            let stats = stages::rejection_sampling(
                &policy,
                &reward.join("final"),
                &chosen,
                &config,
                &samples,
                progress,
            )?;
            rejection.push((
                stats.responses,
                stats.responses as f64 / stats.seconds,
                stats.mean_best_reward,
                stats.mean_reward,
            ));
        }
        let sft = dir.join("sft");
        if !sft.join("final").exists() {
            announce(&format!("round {round}: SFT"));
            let mut data = recipe.data.sft.clone();
            data.push(samples.clone());
            stages::sft(&policy, &data, &recipe.sft, &held_out, &stage(sft.clone()))?;
        }
        let dpo = dir.join("dpo");
        if !dpo.join("final").exists() {
            announce(&format!("round {round}: DPO"));
            stages::dpo(
                &sft.join("final"),
                &recipe.data.preferences,
                &recipe.dpo,
                recipe.dpo_loss,
                &held_out,
                &stage(dpo.clone()),
            )?;
        }
        policy = dpo.join("final");
    }
    Ok(RoundsSummary {
        final_model: policy,
        rejection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_recipes_parse_with_their_models_contexts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
        for (name, seq_len) in [("posttrain-tiny", 256), ("posttrain-small", 512)] {
            let recipe = PosttrainRecipe::load(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(recipe.name, name);
            assert_eq!(recipe.rounds, 2);
            for config in [&recipe.reward, &recipe.sft, &recipe.dpo] {
                assert_eq!(config.seq_len, seq_len, "{name}");
            }
            assert_eq!(recipe.rejection.score_seq_len, seq_len, "{name}");
        }
    }
}
