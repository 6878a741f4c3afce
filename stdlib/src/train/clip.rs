//! Gradient clipping by the global L2 norm, as `torch.nn.utils.clip_grad_norm_` does it.
//!
//! Candle has none. The norm is taken over every variable's gradient together: each variable's
//! sum of squares is reduced on its device in f64 (an f32 running sum loses digits over large
//! tensors and overflows for entries above ~1e19), the per-variable sums come to the host in one
//! transfer and are added in name order, so the result is the same in every process (a
//! `VarMap`'s own order is not, see `params.rs`).
//!
//! When the norm exceeds `max_norm`, every gradient is multiplied by
//! `max_norm / (norm + CLIP_EPS)`, a coefficient formed in f32 as torch forms it. A non-finite norm leaves the gradients as they are and is
//! reported with the names of the variables at fault ([`GradNorm::non_finite`]); `guard.rs` turns
//! it into an error instead of an update.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};

use super::params::Params;

/// Added to the norm before dividing, as in torch, so that a zero norm does not divide by zero.
pub const CLIP_EPS: f64 = 1e-6;

/// The global gradient norm of one step, before clipping.
#[derive(Clone, Debug, PartialEq)]
pub struct GradNorm {
    /// L2 norm over all gradients.
    pub total: f64,
    /// Variables whose gradient has NaN or infinite entries, in name order; empty when `total` is
    /// finite.
    pub non_finite: Vec<String>,
}

/// The global L2 norm of the gradients in `grads` of the variables in `params`; variables
/// without a gradient do not count.
pub fn grad_norm(params: &Params, grads: &GradStore) -> Result<GradNorm> {
    let mut names = Vec::new();
    let mut sums = Vec::new();
    for (name, var) in params.iter() {
        if let Some(grad) = grads.get(var.as_tensor()) {
            names.push(name);
            sums.push(grad.detach().to_dtype(DType::F64)?.sqr()?.sum_all()?);
        }
    }
    if sums.is_empty() {
        return Ok(GradNorm { total: 0.0, non_finite: Vec::new() });
    }
    let sums = Tensor::stack(&sums, 0)?.to_vec1::<f64>()?;
    let total = sums.iter().sum::<f64>().sqrt();
    let non_finite =
        names.iter().zip(&sums).filter(|(_, s)| !s.is_finite()).map(|(name, _)| name.to_string()).collect();
    Ok(GradNorm { total, non_finite })
}

/// Scales the gradients of `params` in `grads` so that their global L2 norm is at most
/// `max_norm`, and returns the norm before scaling. Gradients are left alone when the norm is
/// within `max_norm` or not finite.
pub fn clip_grad_norm(params: &Params, grads: &mut GradStore, max_norm: f64) -> Result<GradNorm> {
    let norm = grad_norm(params, grads)?;
    let coefficient = clip_coefficient(norm.total, max_norm);
    if norm.total.is_finite() && coefficient < 1.0 {
        for (_, var) in params.iter() {
            if let Some(grad) = grads.get(var.as_tensor()) {
                let clipped = (grad.detach() * f64::from(coefficient))?;
                grads.insert(var.as_tensor(), clipped);
            }
        }
    }
    Ok(norm)
}

/// `max_norm / (norm + CLIP_EPS)` formed in f32 as torch forms it for f32 gradients: the norm is
/// an f32 tensor, `CLIP_EPS` is added in f32, and a Python float divided by a tensor is the
/// tensor's reciprocal times the float.
fn clip_coefficient(norm: f64, max_norm: f64) -> f32 {
    (1.0 / (norm as f32 + CLIP_EPS as f32)) * max_norm as f32
}
