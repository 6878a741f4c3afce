//! Checking a weights file the user supplies against the tensors a network expects, so a wrong
//! or partial file is refused with every problem named at once (a missing tensor, a wrong shape,
//! an integer dtype) instead of failing at the first lookup, or loading and computing something
//! else.

use std::collections::HashMap;
use std::fmt;

use candle_core::{DType, Tensor};

/// One tensor of a weights file that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorProblem {
    Missing { name: String, expected: Vec<usize> },
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    NotFloat { name: String, found: DType },
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::Missing { name, expected } => write!(f, "no tensor {name} (shape {expected:?})"),
            TensorProblem::Shape { name, expected, found } => {
                write!(f, "tensor {name} has shape {found:?}, the network expects {expected:?}")
            }
            TensorProblem::NotFloat { name, found } => write!(f, "tensor {name} has dtype {found:?}, not a float type"),
        }
    }
}

/// Every problem of `tensors` against the `expected` names and shapes; empty when usable.
/// Tensors the network does not use are ignored.
pub fn check_tensors(tensors: &HashMap<String, Tensor>, expected: Vec<(String, Vec<usize>)>) -> Vec<TensorProblem> {
    expected
        .into_iter()
        .filter_map(|(name, expected)| match tensors.get(&name) {
            None => Some(TensorProblem::Missing { name, expected }),
            Some(t) if t.dims() != expected.as_slice() => {
                Some(TensorProblem::Shape { name, expected, found: t.dims().to_vec() })
            }
            Some(t) if !t.dtype().is_float() => Some(TensorProblem::NotFloat { name, found: t.dtype() }),
            Some(_) => None,
        })
        .collect()
}
