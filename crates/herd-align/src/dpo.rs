//! The DPO objective as Llama 3 uses it (paper §4.1.4): the policy against a frozen reference,
//! `−log σ(β·[(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))])` per pair, plus an
//! NLL term on the chosen response (coefficient 0.2 in the paper), averaged over the batch.
//! Log-probabilities are sums over the response tokens that carry loss ([`crate::masks`]);
//! the NLL term is per token.

use candle_core::{Result, Tensor};

/// β and the NLL coefficient.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DpoConfig {
    /// Inverse temperature of the implicit reward (paper: 0.1).
    pub beta: f64,
    /// Weight of the chosen responses' NLL (paper: 0.2).
    pub nll_coefficient: f64,
}

impl DpoConfig {
    /// Checks β (finite, above 0) and the NLL coefficient (finite, 0 or more).
    pub fn validate(&self) -> std::result::Result<(), String> {
        herd_util::check::finite_above("beta", self.beta, 0.0)?;
        herd_util::check::finite_at_least("nll_coefficient", self.nll_coefficient, 0.0)
    }
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            nll_coefficient: 0.2,
        }
    }
}

/// Per-pair sums of response log-probabilities (shape `[pairs]`).
pub struct PairLogProbs<'a> {
    /// Policy, chosen responses.
    pub policy_chosen: &'a Tensor,
    /// Policy, rejected responses.
    pub policy_rejected: &'a Tensor,
    /// Reference, chosen (computed once, constants).
    pub reference_chosen: &'a Tensor,
    /// Reference, rejected.
    pub reference_rejected: &'a Tensor,
    /// Tokens of each chosen response that carry loss (for the per-token NLL).
    pub chosen_tokens: &'a Tensor,
}

/// What a DPO batch reports beside its loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoStats {
    /// Mean implicit reward of the chosen responses, `β·(log π − log π_ref)`.
    pub chosen_reward: f64,
    /// Same for the rejected ones.
    pub rejected_reward: f64,
    /// Mean chosen − rejected reward.
    pub margin: f64,
    /// Share of pairs whose chosen reward is higher.
    pub accuracy: f64,
}

/// −log σ(m) element-wise: softplus(−m) = log(1 + e^{−m}), written stably as
/// max(−m, 0) + log(1 + e^{−|m|}). The pairwise loss of DPO and of the reward model.
pub fn neg_log_sigmoid(margin: &Tensor) -> Result<Tensor> {
    margin.neg()?.relu()? + (margin.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// The batch's loss (differentiable in the policy log-probs) and its statistics.
pub fn dpo_loss(lp: &PairLogProbs, config: DpoConfig) -> Result<(Tensor, DpoStats)> {
    let chosen = ((lp.policy_chosen - lp.reference_chosen)? * config.beta)?;
    let rejected = ((lp.policy_rejected - lp.reference_rejected)? * config.beta)?;
    let margin = (&chosen - &rejected)?;
    let softplus = neg_log_sigmoid(&margin)?;
    let nll = (lp.policy_chosen.neg()? / lp.chosen_tokens)?;
    let loss = (softplus.mean_all()? + (nll.mean_all()? * config.nll_coefficient)?)?;
    let values =
        |t: &Tensor| -> Result<Vec<f64>> { t.to_dtype(candle_core::DType::F64)?.to_vec1() };
    let (c, r, m) = (values(&chosen)?, values(&rejected)?, values(&margin)?);
    let n = m.len().max(1) as f64;
    let stats = DpoStats {
        chosen_reward: c.iter().sum::<f64>() / n,
        rejected_reward: r.iter().sum::<f64>() / n,
        margin: m.iter().sum::<f64>() / n,
        accuracy: m.iter().filter(|&&v| v > 0.0).count() as f64 / n,
    };
    Ok((loss, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Two pairs computed by hand: loss, statistics and the gradient of the policy log-probs,
    /// `∂/∂π_c = −β·σ(−m)/n − α/(n·len)`, `∂/∂π_r = β·σ(−m)/n`.
    #[test]
    fn loss_and_gradient_equal_the_closed_form() {
        let dev = Device::Cpu;
        let t = |v: &[f64]| Tensor::from_slice(v, v.len(), &dev).unwrap();
        let pc = Var::from_tensor(&t(&[-10.0, -4.0])).unwrap();
        let pr = Var::from_tensor(&t(&[-12.0, -1.5])).unwrap();
        let (rc, rr, len) = (t(&[-11.0, -5.0]), t(&[-11.0, -2.0]), t(&[5.0, 2.0]));
        let lp = PairLogProbs {
            policy_chosen: &pc,
            policy_rejected: &pr,
            reference_chosen: &rc,
            reference_rejected: &rr,
            chosen_tokens: &len,
        };
        let (beta, alpha) = (0.1, 0.2);
        let (loss, stats) = dpo_loss(
            &lp,
            DpoConfig {
                beta,
                nll_coefficient: alpha,
            },
        )
        .unwrap();
        // Pair 1: Δc = 1, Δr = −1 → m = 0.2. Pair 2: Δc = 1, Δr = 0.5 → m = 0.05.
        let sigma = |x: f64| 1.0 / (1.0 + (-x).exp());
        let m = [0.2, 0.05];
        let expected =
            -(sigma(m[0]).ln() + sigma(m[1]).ln()) / 2.0 + alpha * (10.0 / 5.0 + 4.0 / 2.0) / 2.0;
        let got: f64 = loss.to_scalar().unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!((stats.chosen_reward - 0.1).abs() < 1e-12);
        assert!((stats.rejected_reward - (-0.1 + 0.05) / 2.0).abs() < 1e-12);
        assert!((stats.margin - 0.125).abs() < 1e-12 && stats.accuracy == 1.0);
        let grads = loss.backward().unwrap();
        let gc: Vec<f64> = grads.get(&pc).unwrap().to_vec1().unwrap();
        let gr: Vec<f64> = grads.get(&pr).unwrap().to_vec1().unwrap();
        for (i, tokens) in [5.0, 2.0].iter().enumerate() {
            let dc = -beta * sigma(-m[i]) / 2.0 - alpha / (2.0 * tokens);
            let dr = beta * sigma(-m[i]) / 2.0;
            assert!((gc[i] - dc).abs() < 1e-12, "{} vs {dc}", gc[i]);
            assert!((gr[i] - dr).abs() < 1e-12, "{} vs {dr}", gr[i]);
        }
    }

    /// Large margins neither overflow nor lose the gradient's sign.
    #[test]
    fn extreme_margins_are_stable() {
        let dev = Device::Cpu;
        let t = |v: f64| Tensor::from_slice(&[v], 1, &dev).unwrap();
        let (zero, one) = (t(0.0), t(1.0));
        for m in [-5000.0, 5000.0] {
            let pc = t(m);
            let lp = PairLogProbs {
                policy_chosen: &pc,
                policy_rejected: &zero,
                reference_chosen: &zero,
                reference_rejected: &zero,
                chosen_tokens: &one,
            };
            let cfg = DpoConfig {
                beta: 1.0,
                nll_coefficient: 0.0,
            };
            let loss: f64 = dpo_loss(&lp, cfg).unwrap().0.to_scalar().unwrap();
            let expected = if m > 0.0 { 0.0 } else { -m };
            assert!((loss - expected).abs() < 1e-9, "{loss}");
        }
    }
}
