//! Checked values: what a parameter holds once its expression has been evaluated against the
//! parameter's type. These are what the engine hashes into cache keys and records in runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// `none`: an optional parameter switched off.
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// An enum value or a name (`t1_pre`, `logit_normal`, a shell output name).
    Enum(String),
    List(Vec<Value>),
    Record(BTreeMap<String, Value>),
    /// A constructor with every argument resolved (`rflow(sampling: logit_normal)`).
    Ctor {
        name: String,
        args: BTreeMap<String, Value>,
    },
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Enum(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_list(&self) -> &[Value] {
        match self {
            Value::List(items) => items,
            _ => &[],
        }
    }

    /// The constructor name of a `Ctor`, or the name of an `Enum`.
    pub fn variant(&self) -> Option<&str> {
        match self {
            Value::Ctor { name, .. } | Value::Enum(name) => Some(name),
            _ => None,
        }
    }

    /// A field of a record or an argument of a constructor.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Record(fields) => fields.get(key),
            Value::Ctor { args, .. } => args.get(key),
            _ => None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// A short description of what kind of value this is, for "expected X, found Y".
    pub fn describe(&self) -> String {
        match self {
            Value::None => "`none`".into(),
            Value::Bool(b) => format!("the boolean `{b}`"),
            Value::Int(i) => format!("the integer `{i}`"),
            Value::Float(x) => format!("the number `{}`", Float(*x)),
            Value::Str(s) => format!("the string \"{s}\""),
            Value::Enum(s) => format!("the name `{s}`"),
            Value::List(_) => "a list".into(),
            Value::Record(_) => "a record".into(),
            Value::Ctor { name, .. } => format!("`{name}(...)`"),
        }
    }
}

/// Formats a float so it reads back as a float (`1.0`, not `1`) and compactly (`0.0001` as `1e-4`).
pub struct Float(pub f64);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        let plain = format!("{x}");
        let exp = format!("{x:e}");
        if x != 0.0 && exp.len() < plain.len() {
            f.write_str(&exp)
        } else if plain.contains('.') || plain.contains("inf") || plain.contains("NaN") {
            f.write_str(&plain)
        } else {
            write!(f, "{plain}.0")
        }
    }
}

/// Values print in the language's own syntax, so a message or `medgen plan` can quote them.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("none"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", Float(*x)),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Enum(s) => f.write_str(s),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Record(fields) => {
                f.write_str("{")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Ctor { name, args } => {
                write!(f, "{name}(")?;
                for (i, (k, v)) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str(")")
            }
        }
    }
}
