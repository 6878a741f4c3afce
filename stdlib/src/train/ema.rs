//! Exponential moving average of the weights (Polyak averaging), the weights diffusion models are
//! evaluated and sampled with; the seeds found it helps in both 2D and 3D.
//!
//! Candle has none. [`Ema`] keeps a shadow copy of every variable and after each optimiser step
//! moves it towards the weights: `shadow = lerp(shadow, weight, 1 - decay)`, which is what
//! `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn(decay)` computes (the first
//! average being a copy of the weights, here made by [`Ema::new`]).
//!
//! Copy-in ([`Ema::copy_in`]) restarts the average from the current weights; copy-out
//! ([`Ema::copy_out`]) writes the averaged weights into the model, for export; [`Ema::swap`]
//! exchanges the two, so validation can run on the averaged weights and a second swap restores
//! the training weights without a third copy in memory. The shadow weights are part of the
//! checkpoint.

use candle_core::{Result, Tensor, Var};

use super::fused::lerp;
use super::params::Params;

/// An exponential moving average of a set of variables.
#[derive(Clone, Debug)]
pub struct Ema {
    decay: f64,
    /// `(name, variable, shadow)` in name order.
    entries: Vec<(String, Var, Tensor)>,
}

impl Ema {
    /// An average of `params` starting from their current values; `decay` in [0, 1] is the weight
    /// of the old average at each update (0.999 and 0.9999 are usual).
    pub fn new(params: &Params, decay: f64) -> Result<Ema> {
        if !(0.0..=1.0).contains(&decay) {
            candle_core::bail!("EMA decay {decay} must lie in [0, 1]");
        }
        let entries = params
            .iter()
            .map(|(name, var)| Ok((name.to_string(), var.clone(), snapshot(var)?)))
            .collect::<Result<_>>()?;
        Ok(Ema { decay, entries })
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Moves the average towards the current weights.
    pub fn update(&mut self) -> Result<()> {
        for (_, var, shadow) in &mut self.entries {
            *shadow = lerp(shadow, &var.as_tensor().detach(), 1.0 - self.decay)?;
        }
        Ok(())
    }

    /// Restarts the average from the current weights.
    pub fn copy_in(&mut self) -> Result<()> {
        for (_, var, shadow) in &mut self.entries {
            *shadow = snapshot(var)?;
        }
        Ok(())
    }

    /// Writes the averaged weights into the variables.
    pub fn copy_out(&self) -> Result<()> {
        self.entries.iter().try_for_each(|(_, var, shadow)| var.set(shadow))
    }

    /// Exchanges the averaged weights and the variables' weights.
    pub fn swap(&mut self) -> Result<()> {
        for (_, var, shadow) in &mut self.entries {
            let weights = snapshot(var)?;
            var.set(shadow)?;
            *shadow = weights;
        }
        Ok(())
    }

    /// `(name, averaged weight)` in name order.
    pub fn weights(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(name, _, shadow)| (name.as_str(), shadow))
    }

    /// Replaces the averaged weight of `name` (when resuming from a checkpoint). Fails if there is
    /// no such variable or `weight` differs from it in shape or dtype; `weight` is moved to the
    /// variable's device.
    pub fn set_weight(&mut self, name: &str, weight: &Tensor) -> Result<()> {
        let Some((_, var, shadow)) = self.entries.iter_mut().find(|(n, _, _)| n == name) else {
            candle_core::bail!("the EMA has no variable called {name}");
        };
        if weight.shape() != var.shape() || weight.dtype() != var.dtype() {
            candle_core::bail!(
                "EMA weight {name} of shape {:?} and dtype {:?} for a variable of shape {:?} and dtype {:?}",
                weight.shape(),
                weight.dtype(),
                var.shape(),
                var.dtype()
            );
        }
        *shadow = weight.to_device(var.device())?;
        Ok(())
    }
}

/// A copy of `var`'s current value in its own storage (`Var::set` overwrites the variable's
/// storage in place, so a plain clone would follow later updates).
fn snapshot(var: &Var) -> Result<Tensor> {
    var.as_tensor().detach().copy()
}
