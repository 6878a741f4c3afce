//! The training core shared by every training stage: optimiser, schedules, gradient clipping,
//! EMA, seeded random streams per purpose, and crash-safe, resumable checkpoints.

pub mod checkpoint;
pub mod clip;
pub mod ema;
mod fused;
pub mod guard;
mod json_f64;
pub mod loss;
pub mod optim;
pub mod params;
pub mod rng;
pub mod schedule;
pub mod trainer;
