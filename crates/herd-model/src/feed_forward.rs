//! The SwiGLU feed-forward network: `W2 (silu(W1 x) ⊙ W3 x)`.

use candle_core::{Result, Tensor};

use crate::linear::Linear;

/// Gate (`w1`), up (`w3`) and down (`w2`) projections.
#[derive(Debug, Clone)]
pub struct FeedForward {
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

impl FeedForward {
    /// Applies the network to `x` (`[..., dim]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        self.down.forward(&(gate * self.up.forward(x)?)?)
    }
}
