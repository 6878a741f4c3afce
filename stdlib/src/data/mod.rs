//! Data: volumes in one memory order, the synthetic phantom, patient-level splits.

pub mod augment;
pub mod layout;
pub mod loader;
pub mod phantom;
pub mod tumours;
pub mod volume;
