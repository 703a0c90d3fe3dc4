//! CloudEvents SQL Expression Language v1.0.0: parser and fail-fast evaluator.
//!
//! ```
//! use evmesh_filter::cesql::{Expression, Value};
//! let expr = Expression::parse("INT(hop) < 10 AND type LIKE 'order.%'").unwrap();
//! # use cloudevents::EventBuilder;
//! let event = cloudevents::EventBuilderV10::new()
//!     .id("1").source("/s").ty("order.created").extension("hop", "3")
//!     .build().unwrap();
//! assert_eq!(expr.evaluate(&event), (Value::Boolean(true), None));
//! ```

mod eval;
mod parser;

use std::fmt;

use crate::attr::EventAttributes;

/// A CESQL value: the language has three primitive types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A Boolean.
    Boolean(bool),
    /// A 32-bit signed Integer.
    Integer(i32),
    /// A String.
    String(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// The kinds of error the CESQL specification defines (and the TCK names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The expression is not syntactically valid (`parse`).
    Parse,
    /// Division or modulo by zero, or an integer overflow (`math`).
    Math,
    /// A value could not be cast to the type an operator or function needs (`cast`).
    Cast,
    /// No function with that name and arity exists (`missingFunction`).
    MissingFunction,
    /// A function rejected its arguments (`functionEvaluation`).
    FunctionEvaluation,
    /// The expression addresses an attribute the event does not have (`missingAttribute`).
    MissingAttribute,
    /// Any other error (`generic`).
    Generic,
}

impl ErrorKind {
    /// The name the CESQL TCK uses for this kind (`parse`, `math`, `missingAttribute`, ...).
    pub fn tck_name(self) -> &'static str {
        match self {
            ErrorKind::Parse => "parse",
            ErrorKind::Math => "math",
            ErrorKind::Cast => "cast",
            ErrorKind::MissingFunction => "missingFunction",
            ErrorKind::FunctionEvaluation => "functionEvaluation",
            ErrorKind::MissingAttribute => "missingAttribute",
            ErrorKind::Generic => "generic",
        }
    }
}

/// An error raised while parsing or evaluating an expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} error: {message}")]
pub struct EvalError {
    /// What kind of error it is.
    pub kind: ErrorKind,
    /// A human-readable description.
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> EvalError {
        EvalError {
            kind,
            message: message.into(),
        }
    }
}

/// A syntax error: where in the expression, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CESQL syntax error at line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line in the expression.
    pub line: usize,
    /// 1-based character column in that line.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// A parsed CESQL expression. Parse once, evaluate per event; `Send + Sync`, cheap to clone.
#[derive(Clone, Debug)]
pub struct Expression {
    root: std::sync::Arc<eval::Expr>,
}

impl Expression {
    /// Parses an expression (keywords and function names are case-insensitive). Unknown
    /// functions are not a parse error: they evaluate to `false` with a
    /// [`ErrorKind::MissingFunction`] error, as the specification requires.
    pub fn parse(expression: &str) -> Result<Expression, ParseError> {
        let root = parser::parse(expression)?;
        Ok(Expression {
            root: std::sync::Arc::new(root),
        })
    }

    /// Evaluates the expression in fail-fast mode: on the first error the value is the zero
    /// value of the failing sub-expression's type, propagated up as the specification says.
    pub fn evaluate(&self, event: &dyn EventAttributes) -> (Value, Option<EvalError>) {
        let (value, error) = self.root.eval(event);
        (value.into_owned(), error)
    }

    /// Whether the event passes: the result is Boolean `true` and no error happened. On an
    /// evaluation error, returns it.
    pub(crate) fn test(&self, event: &dyn EventAttributes) -> Result<bool, EvalError> {
        match self.root.eval(event) {
            (_, Some(error)) => Err(error),
            (eval::Val::Bool(b), None) => Ok(b),
            (_, None) => Ok(false),
        }
    }
}
