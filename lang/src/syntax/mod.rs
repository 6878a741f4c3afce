//! The surface syntax: grammar, syntax tree, parser, and the translation of pest's errors.

pub mod ast;
mod expected;
mod parse;

pub use parse::{parse_file, parse_value, MAX_DEPTH};
