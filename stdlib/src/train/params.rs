//! The trainable variables of a model, by name, in one fixed order.
//!
//! Candle's `VarMap` keeps its variables in a `HashMap`, whose iteration order changes from one
//! process to the next. Whatever combines values across variables (the global gradient norm is a
//! floating-point sum) or lays them out in files must not depend on that order, or a resumed run
//! would drift from an uninterrupted one in the last bits. [`Params`] sorts the variables by name
//! once, and every part of the training core walks them in that order.

use candle_core::Var;
use candle_nn::VarMap;

/// Named variables sorted by name. Cloning is cheap: a `Var` is a shared handle, so a clone
/// updates the same storage.
#[derive(Clone, Debug)]
pub struct Params {
    entries: Vec<(String, Var)>,
}

impl Params {
    /// Every variable of `varmap`, sorted by name.
    pub fn from_varmap(varmap: &VarMap) -> Params {
        let mut entries: Vec<(String, Var)> =
            varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone().into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Params { entries }
    }

    /// The given variables, sorted by name.
    pub fn from_entries(mut entries: Vec<(String, Var)>) -> Params {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Params { entries }
    }

    /// `(name, variable)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.entries.iter().map(|(name, var)| (name.as_str(), var))
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| &self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
