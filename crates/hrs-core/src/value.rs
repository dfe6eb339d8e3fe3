//! Typed cells of result rows, and their wire form.

use hrs_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// One cell of a result row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// A flag.
    Bool(bool),
}

impl Value {
    /// The name of the value's type, for messages that must not show the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Text(_) => "text",
            Self::Int(_) => "int",
            Self::Real(_) => "real",
            Self::Bool(_) => "bool",
        }
    }

    /// Returns the value as it is printed in tables and CSV (NULL as empty).
    pub fn display(&self) -> String {
        match self {
            Self::Null => String::new(),
            Self::Text(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Real(r) => r.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<f64> for Value {
    fn from(r: f64) -> Self {
        Self::Real(r)
    }
}

/// A missing value is SQL's NULL.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<&Value> for pb::Value {
    fn from(value: &Value) -> Self {
        use pb::value::Kind;
        let kind = match value {
            Value::Null => Kind::Null(true),
            Value::Text(s) => Kind::Text(s.clone()),
            Value::Int(i) => Kind::Int(*i),
            Value::Real(r) => Kind::Real(*r),
            Value::Bool(b) => Kind::Bool(*b),
        };
        pb::Value { kind: Some(kind) }
    }
}

impl From<&pb::Value> for Value {
    fn from(value: &pb::Value) -> Self {
        use pb::value::Kind;
        match &value.kind {
            None | Some(Kind::Null(_)) => Value::Null,
            Some(Kind::Text(s)) => Value::Text(s.clone()),
            Some(Kind::Int(i)) => Value::Int(*i),
            Some(Kind::Real(r)) => Value::Real(*r),
            Some(Kind::Bool(b)) => Value::Bool(*b),
        }
    }
}
