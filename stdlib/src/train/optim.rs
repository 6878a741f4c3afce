//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) with state we
//! can save.
//!
//! Why not `candle_nn::AdamW`: its moment buffers and step counter are private, so a run cannot
//! be checkpointed and resumed — a restart would begin with zero moments and an unwarmed bias
//! correction, a different trajectory from the one interrupted. Here the state is public: per
//! variable, the first and second moments and the step count ([`Moments`]), exactly what
//! `torch.optim.AdamW` keeps in `state[p]` (`exp_avg`, `exp_avg_sq`, `step`).
//!
//! The update is torch's single-tensor AdamW (`torch/optim/adam.py`, `_single_tensor_adam` with
//! `decoupled_weight_decay=True`), operation for operation and in the same order, with the scalar
//! coefficients computed in f64 as Python does and rounded to the tensor dtype where torch rounds
//! them, true division where torch divides, and the fused multiply-adds of torch's `lerp` and
//! `addcmul` kernels (`fused.rs`). On CPU, in f32 and f64, the moments are bit-identical to
//! torch's; so are the parameters, but for one thing: torch's CPU `sqrt` (MKL's vector math) is
//! one ulp off the correctly rounded root for about 20% of f32 inputs, ours is not, which moves an
//! occasional parameter by one ulp. With a correctly rounded square root in torch's update, the
//! parameters are bit-identical as well (`tests/train.rs`).
//!
//! ```text
//! step += 1
//! param *= 1 - lr * weight_decay
//! exp_avg = lerp(exp_avg, grad, 1 - beta1)
//! exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
//! step_size = lr / (1 - beta1^step)
//! denom = sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps
//! param += (-step_size * exp_avg) / denom
//! ```
//!
//! A variable without a gradient in a step is left alone, moments and step count included, as
//! torch skips parameters whose `grad` is `None`. The learning rate is an argument of
//! [`AdamW::step`]: it comes from the schedule, a pure function of the step (`schedule.rs`).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::fused::{addcmul, lerp};
use super::params::Params;

/// Betas for adversarial training: with torch's default (0.9, 0.999) the seeds' DC-AE phase 3
/// (GAN) discriminator loss oscillated and the generator degraded (seed pitfall 58); DCGAN and
/// StyleGAN use (0.5, 0.9) or lower.
pub const GAN_BETAS: (f64, f64) = (0.5, 0.9);

/// AdamW's hyperparameters, except the learning rate (see the module docs). The default is
/// torch's: betas (0.9, 0.999), eps 1e-8, weight decay 1e-2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

impl AdamWConfig {
    fn validate(&self) -> Result<()> {
        let AdamWConfig { beta1, beta2, eps, weight_decay } = *self;
        for (name, beta) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&beta) {
                candle_core::bail!("AdamW {name} = {beta} must lie in [0, 1)");
            }
        }
        if !(eps.is_finite() && eps > 0.0) {
            candle_core::bail!("AdamW eps = {eps} must be finite and positive");
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            candle_core::bail!("AdamW weight_decay = {weight_decay} must be finite and non-negative");
        }
        Ok(())
    }
}

/// AdamW's state for one variable, in the variable's dtype as torch keeps it.
#[derive(Clone, Debug)]
pub struct Moments {
    /// First moment (`exp_avg`).
    pub exp_avg: Tensor,
    /// Second moment (`exp_avg_sq`).
    pub exp_avg_sq: Tensor,
    /// Updates applied to this variable so far.
    pub step: u64,
}

/// AdamW over a fixed set of variables (the floating-point ones of the [`Params`] it was made
/// with), in name order.
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    vars: Vec<(String, Var, Moments)>,
}

impl AdamW {
    /// AdamW with zero moments for every floating-point variable of `params`; fails on invalid
    /// hyperparameters.
    pub fn new(params: &Params, config: AdamWConfig) -> Result<AdamW> {
        config.validate()?;
        let vars = params
            .iter()
            .filter(|(_, var)| var.dtype().is_float())
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok((name.to_string(), var.clone(), Moments { exp_avg: zeros.clone(), exp_avg_sq: zeros, step: 0 }))
            })
            .collect::<Result<_>>()?;
        Ok(AdamW { config, vars })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// One update with learning rate `lr` from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let config = self.config;
        for (_, var, moments) in &mut self.vars {
            if let Some(grad) = grads.get(var.as_tensor()) {
                update(&config, lr, var, grad, moments)?;
            }
        }
        Ok(())
    }

    /// `(name, moments)` of every optimised variable, in name order.
    pub fn moments(&self) -> impl Iterator<Item = (&str, &Moments)> {
        self.vars.iter().map(|(name, _, moments)| (name.as_str(), moments))
    }

    /// Replaces the moments of the variable called `name` (when resuming from a checkpoint).
    /// Fails if there is no such variable or the tensors do not match it in shape and dtype; the
    /// tensors are moved to the variable's device.
    pub fn set_moments(&mut self, name: &str, moments: Moments) -> Result<()> {
        let Some((_, var, slot)) = self.vars.iter_mut().find(|(n, _, _)| n == name) else {
            candle_core::bail!("AdamW has no variable called {name}");
        };
        let exp_avg = matching(var, &moments.exp_avg, name)?;
        let exp_avg_sq = matching(var, &moments.exp_avg_sq, name)?;
        *slot = Moments { exp_avg, exp_avg_sq, step: moments.step };
        Ok(())
    }
}

/// `tensor` on `var`'s device, after checking that it has `var`'s shape and dtype.
fn matching(var: &Var, tensor: &Tensor, name: &str) -> Result<Tensor> {
    if tensor.shape() != var.shape() || tensor.dtype() != var.dtype() {
        candle_core::bail!(
            "{name}: state of shape {:?} and dtype {:?} for a variable of shape {:?} and dtype {:?}",
            tensor.shape(),
            tensor.dtype(),
            var.shape(),
            var.dtype()
        );
    }
    tensor.to_device(var.device())
}

/// torch's `_single_tensor_adam` for one variable (see the module docs).
fn update(config: &AdamWConfig, lr: f64, var: &Var, grad: &Tensor, moments: &mut Moments) -> Result<()> {
    let AdamWConfig { beta1, beta2, eps, weight_decay } = *config;
    moments.step += 1;
    let step = moments.step as f64;
    let mut param = var.as_tensor().detach();
    if weight_decay != 0.0 {
        param = (param * (1.0 - lr * weight_decay))?;
    }
    let grad = grad.detach();
    moments.exp_avg = lerp(&moments.exp_avg, &grad, 1.0 - beta1)?;
    moments.exp_avg_sq = addcmul(&(&moments.exp_avg_sq * beta2)?, &grad, &grad, 1.0 - beta2)?;
    let step_size = lr / (1.0 - beta1.powf(step));
    let bias_correction2_sqrt = (1.0 - beta2.powf(step)).powf(0.5);
    let denom = (divide(&moments.exp_avg_sq.sqrt()?, bias_correction2_sqrt)? + eps)?;
    let next = (param + ((&moments.exp_avg * -step_size)? / denom)?)?;
    var.set(&next)
}

/// `tensor / divisor` as a true division, as torch computes a tensor divided by a Python float
/// (Candle's `tensor / f64` multiplies by the rounded reciprocal instead).
fn divide(tensor: &Tensor, divisor: f64) -> Result<Tensor> {
    let divisor = Tensor::new(divisor, tensor.device())?.to_dtype(tensor.dtype())?;
    tensor.broadcast_div(&divisor)
}
