//! Learning rate and batch shape over training (paper §3.4.1): linear warmup, cosine decay to a
//! floor, then an annealing phase in which the rate falls linearly to 0; and stages that set
//! the sequence length and rows per step (the batch-size schedule and the long-context stages).

use serde::{Deserialize, Serialize};

/// The learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Rate at the end of warmup.
    pub peak_lr: f64,
    /// Floor of the cosine decay.
    pub min_lr: f64,
    /// Steps of linear warmup (step `s < warmup` uses `peak · (s + 1) / warmup`).
    pub warmup_steps: u64,
    /// Step at which the cosine reaches `min_lr`; it stays there after.
    pub decay_steps: u64,
    /// Total steps of the run.
    pub total_steps: u64,
    /// Last steps of the run that anneal: the rate goes linearly from its value at the
    /// start of annealing to 0 at `total_steps`.
    #[serde(default)]
    pub anneal_steps: u64,
}

impl LrSchedule {
    /// The rate of the update made at (0-based) `step`.
    pub fn lr(&self, step: u64) -> f64 {
        let anneal_start = self.total_steps.saturating_sub(self.anneal_steps);
        if self.anneal_steps > 0 && step >= anneal_start {
            let left = self.total_steps.saturating_sub(step) as f64;
            return self.decayed(anneal_start) * left / self.anneal_steps as f64;
        }
        self.decayed(step)
    }

    fn decayed(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.decay_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.peak_lr - self.min_lr) * cosine
    }

    /// Whether `step` is in the annealing phase.
    pub fn is_annealing(&self, step: u64) -> bool {
        self.anneal_steps > 0 && step >= self.total_steps.saturating_sub(self.anneal_steps)
    }
}

/// One stage of training: until `until_step` (exclusive), steps use rows of `seq_len` tokens,
/// `batch_rows` rows per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// First step after this stage.
    pub until_step: u64,
    /// Tokens per row (the context length of this stage).
    pub seq_len: usize,
    /// Rows per optimizer step (the batch size is `seq_len · batch_rows` tokens).
    pub batch_rows: usize,
}

/// The stage `step` is in (the last one past the end).
pub fn stage_at(stages: &[Stage], step: u64) -> &Stage {
    stages
        .iter()
        .find(|s| step < s.until_step)
        .unwrap_or_else(|| stages.last().expect("a recipe has at least one stage"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper_405b() -> LrSchedule {
        LrSchedule {
            peak_lr: 8e-5,
            min_lr: 8e-7,
            warmup_steps: 8_000,
            decay_steps: 1_200_000,
            total_steps: 1_250_000,
            anneal_steps: 10_000,
        }
    }

    #[test]
    fn boundary_steps_of_the_paper_schedule() {
        let s = paper_405b();
        assert!((s.lr(0) - 8e-5 / 8000.0).abs() < 1e-18);
        assert!((s.lr(3_999) - 4e-5).abs() < 1e-15);
        assert_eq!(s.lr(7_999), 8e-5);
        assert_eq!(s.lr(8_000), 8e-5);
        let midpoint = 8_000 + (1_200_000 - 8_000) / 2;
        assert!((s.lr(midpoint) - (8e-7 + (8e-5 - 8e-7) / 2.0)).abs() < 1e-15);
        assert_eq!(s.lr(1_200_000), 8e-7);
        assert_eq!(s.lr(1_239_999), 8e-7);
        assert_eq!(
            s.lr(1_240_000),
            8e-7,
            "annealing starts from the current rate"
        );
        assert!((s.lr(1_245_000) - 4e-7).abs() < 1e-18);
        assert!((s.lr(1_249_999) - 8e-7 / 10_000.0).abs() < 1e-20);
        assert!(!s.is_annealing(1_239_999) && s.is_annealing(1_240_000));
    }

    #[test]
    fn cosine_is_monotone_and_floored() {
        let s = paper_405b();
        let mut previous = f64::INFINITY;
        for step in (8_000..1_240_000).step_by(997) {
            let lr = s.lr(step);
            assert!(lr <= previous && lr >= 8e-7);
            previous = lr;
        }
    }

    #[test]
    fn stages_follow_the_paper_batch_schedule() {
        let stages = [
            Stage {
                until_step: 100,
                seq_len: 4096,
                batch_rows: 1024,
            },
            Stage {
                until_step: 200,
                seq_len: 8192,
                batch_rows: 1024,
            },
            Stage {
                until_step: 300,
                seq_len: 8192,
                batch_rows: 2048,
            },
        ];
        assert_eq!(
            stage_at(&stages, 0).seq_len * stage_at(&stages, 0).batch_rows,
            4 << 20
        );
        assert_eq!(stage_at(&stages, 99).seq_len, 4096);
        assert_eq!(
            stage_at(&stages, 100).seq_len * stage_at(&stages, 100).batch_rows,
            8 << 20
        );
        assert_eq!(stage_at(&stages, 250).batch_rows * 8192, 16 << 20);
        assert_eq!(stage_at(&stages, 999).batch_rows, 2048);
    }
}
