//! The CESQL syntax tree and its fail-fast evaluator.
//!
//! Evaluation rule (matches the TCK): when a sub-expression fails, its parent returns the zero
//! value of the parent's own type together with that error. A failed implicit cast inside an
//! operator does not stop that operator: the cast yields the zero value of the target type,
//! the operator computes with it, and the cast error is returned with the result (so `NOT 10`
//! is `true` with a cast error).

use std::borrow::Cow;

use crate::attr::EventAttributes;
use smallvec::SmallVec;

use super::{ErrorKind, EvalError, Value};
use crate::attr::{self, AttrName, AttrValue};

/// A runtime value, borrowing strings from the event where it can.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val<'e> {
    Bool(bool),
    Int(i32),
    Str(Cow<'e, str>),
}

impl Val<'_> {
    pub(crate) fn into_owned(self) -> Value {
        match self {
            Val::Bool(b) => Value::Boolean(b),
            Val::Int(i) => Value::Integer(i),
            Val::Str(s) => Value::String(s.into_owned()),
        }
    }
}

/// Static types, used to pick the zero value an erroring sub-expression evaluates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Bool,
    Int,
    Str,
}

impl Ty {
    fn zero(self) -> Val<'static> {
        match self {
            Ty::Bool => Val::Bool(false),
            Ty::Int => Val::Int(0),
            Ty::Str => Val::Str(Cow::Borrowed("")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogicOp {
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// The built-in functions, resolved by upper-case name and arity at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring2,
    Substring3,
    Abs,
    Int,
    Bool,
    String,
}

impl Func {
    /// Resolves a function by (upper-case) name and number of arguments.
    pub(crate) fn resolve(name: &str, arity: usize) -> Option<Func> {
        Some(match (name, arity) {
            ("LENGTH", 1) => Func::Length,
            ("CONCAT", _) => Func::Concat,
            ("CONCAT_WS", n) if n >= 1 => Func::ConcatWs,
            ("LOWER", 1) => Func::Lower,
            ("UPPER", 1) => Func::Upper,
            ("TRIM", 1) => Func::Trim,
            ("LEFT", 2) => Func::Left,
            ("RIGHT", 2) => Func::Right,
            ("SUBSTRING", 2) => Func::Substring2,
            ("SUBSTRING", 3) => Func::Substring3,
            ("ABS", 1) => Func::Abs,
            ("INT", 1) => Func::Int,
            ("BOOL", 1) => Func::Bool,
            ("STRING", 1) => Func::String,
            _ => return None,
        })
    }

    fn return_type(self) -> Ty {
        match self {
            Func::Length | Func::Abs | Func::Int => Ty::Int,
            Func::Bool => Ty::Bool,
            _ => Ty::Str,
        }
    }

    /// The type argument `i` is implicitly cast to; `None` for the casting functions, which
    /// take any type.
    fn param(self, i: usize) -> Option<Ty> {
        match self {
            Func::Int | Func::Bool | Func::String => None,
            Func::Abs => Some(Ty::Int),
            Func::Left | Func::Right | Func::Substring2 | Func::Substring3 if i > 0 => {
                Some(Ty::Int)
            }
            _ => Some(Ty::Str),
        }
    }
}

/// A compiled LIKE pattern, with fast paths for the common shapes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Like {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    General(Box<[LikeTok]>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LikeTok {
    Lit(char),
    One,
    Many,
}

impl Like {
    /// Compiles a pattern: `%` any sequence, `_` one character, `\%` and `\_` literal.
    pub(crate) fn compile(pattern: &str) -> Like {
        let mut toks = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some('%') | Some('_')) => {
                    if let Some(escaped) = chars.next() {
                        toks.push(LikeTok::Lit(escaped));
                    }
                }
                '%' => {
                    if toks.last() != Some(&LikeTok::Many) {
                        toks.push(LikeTok::Many);
                    }
                }
                '_' => toks.push(LikeTok::One),
                c => toks.push(LikeTok::Lit(c)),
            }
        }
        let lit = |t: &[LikeTok]| -> Option<Box<str>> {
            t.iter()
                .map(|t| match t {
                    LikeTok::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect::<Option<String>>()
                .map(String::into_boxed_str)
        };
        let starts = toks.first() == Some(&LikeTok::Many);
        let ends = toks.len() > usize::from(starts) && toks.last() == Some(&LikeTok::Many);
        let inner = &toks[usize::from(starts)..toks.len() - usize::from(ends)];
        match (starts, ends, lit(inner)) {
            (false, false, Some(s)) => Like::Exact(s),
            (false, true, Some(s)) => Like::Prefix(s),
            (true, false, Some(s)) => Like::Suffix(s),
            (true, true, Some(s)) => Like::Contains(s),
            _ => Like::General(toks.into_boxed_slice()),
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            Like::Exact(s) => text == &**s,
            Like::Prefix(s) => text.starts_with(&**s),
            Like::Suffix(s) => text.ends_with(&**s),
            Like::Contains(s) => text.contains(&**s),
            Like::General(toks) => like_general(text, toks),
        }
    }
}

/// Wildcard matching with single-star backtracking: O(len(text) * len(pattern)) at worst.
fn like_general(text: &str, toks: &[LikeTok]) -> bool {
    let (mut t, mut p) = (0usize, 0usize);
    // (pattern index after the last `%`, text position it currently absorbs up to)
    let mut star: Option<(usize, usize)> = None;
    loop {
        let Some(c) = text.get(t..).and_then(|rest| rest.chars().next()) else {
            return toks
                .get(p..)
                .is_some_and(|rest| rest.iter().all(|t| *t == LikeTok::Many));
        };
        match toks.get(p) {
            Some(LikeTok::Many) => {
                p += 1;
                star = Some((p, t));
                continue;
            }
            Some(LikeTok::One) => {
                t += c.len_utf8();
                p += 1;
                continue;
            }
            Some(LikeTok::Lit(l)) if *l == c => {
                t += c.len_utf8();
                p += 1;
                continue;
            }
            _ => {}
        }
        let Some((sp, st)) = star else {
            return false;
        };
        let Some(skipped) = text.get(st..).and_then(|rest| rest.chars().next()) else {
            return false;
        };
        let nt = st + skipped.len_utf8();
        star = Some((sp, nt));
        p = sp;
        t = nt;
    }
}

/// The syntax tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Bool(bool),
    Int(i32),
    Str(Box<str>),
    /// An integer literal of 2147483648, only valid right under a unary minus.
    IntMinAbs,
    Ident(AttrName),
    Exists(AttrName),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Logic(LogicOp, Box<Expr>, Box<Expr>),
    Eq(bool, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Like(bool, Box<Expr>, Like),
    In(bool, Box<Expr>, Vec<Expr>),
    Call(Func, Vec<Expr>),
    MissingFunction(Box<str>),
}

type Out<'e> = (Val<'e>, Option<EvalError>);

/// Function arguments: most calls have at most three, kept off the heap.
type Args<'e> = SmallVec<[Val<'e>; 3]>;

/// Evaluates a child; on error, returns `zero` with that error from the enclosing function.
macro_rules! child {
    ($e:expr, $event:expr, $zero:expr) => {
        match $e.eval_child($event) {
            (v, None) => v,
            (_, Some(err)) => return ($zero, Some(err)),
        }
    };
}

/// An attribute reference: its value, or `false` with a missing-attribute error.
#[inline(always)]
fn ident<'e>(event: &'e dyn EventAttributes, name: &AttrName) -> Out<'e> {
    let value = match attr::lookup(event, name) {
        Some(AttrValue::Str(s)) => Val::Str(s),
        Some(AttrValue::Bool(b)) => Val::Bool(b),
        Some(AttrValue::Int(i)) => match i32::try_from(i) {
            Ok(i) => Val::Int(i),
            Err(_) => Val::Str(Cow::Owned(i.to_string())),
        },
        None => return (Val::Bool(false), Some(missing_attribute(name))),
    };
    (value, None)
}

#[cold]
#[inline(never)]
fn missing_attribute(name: &AttrName) -> EvalError {
    EvalError::new(
        ErrorKind::MissingAttribute,
        format!("missing attribute '{}'", name.as_str()),
    )
}

#[cold]
#[inline(never)]
fn missing_function(name: &str) -> EvalError {
    EvalError::new(
        ErrorKind::MissingFunction,
        format!("no function {name} with that number of arguments"),
    )
}

fn keep(pending: &mut Option<EvalError>, err: Option<EvalError>) {
    if pending.is_none() {
        *pending = err;
    }
}

#[cold]
#[inline(never)]
fn cast_error(from: &Val<'_>, to: &str) -> EvalError {
    EvalError::new(
        ErrorKind::Cast,
        format!("cannot cast {} to {to}", from.clone().into_owned()),
    )
}

/// Implicit cast to Boolean: only Strings `"true"`/`"false"` (any case) convert.
fn to_bool(v: Val<'_>) -> (bool, Option<EvalError>) {
    match v {
        Val::Bool(b) => (b, None),
        Val::Str(ref s) if s.eq_ignore_ascii_case("true") => (true, None),
        Val::Str(ref s) if s.eq_ignore_ascii_case("false") => (false, None),
        other => (false, Some(cast_error(&other, "Boolean"))),
    }
}

/// Implicit cast to Integer: Booleans are 1/0, Strings are parsed as base-10 32-bit integers.
fn to_int(v: Val<'_>) -> (i32, Option<EvalError>) {
    match v {
        Val::Int(i) => (i, None),
        Val::Bool(b) => (i32::from(b), None),
        Val::Str(ref s) => match s.parse::<i32>() {
            Ok(i) => (i, None),
            Err(_) => (0, Some(cast_error(&v, "Integer"))),
        },
    }
}

/// Cast to String: always defined.
fn to_str(v: Val<'_>) -> Cow<'_, str> {
    match v {
        Val::Str(s) => s,
        Val::Int(i) => Cow::Owned(i.to_string()),
        Val::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
    }
}

fn cast<'e>(v: Val<'e>, ty: Ty, pending: &mut Option<EvalError>) -> Val<'e> {
    match ty {
        Ty::Bool => {
            let (b, e) = to_bool(v);
            keep(pending, e);
            Val::Bool(b)
        }
        Ty::Int => {
            let (i, e) = to_int(v);
            keep(pending, e);
            Val::Int(i)
        }
        Ty::Str => Val::Str(to_str(v)),
    }
}

fn type_of(v: &Val<'_>) -> Ty {
    match v {
        Val::Bool(_) => Ty::Bool,
        Val::Int(_) => Ty::Int,
        Val::Str(_) => Ty::Str,
    }
}

#[cold]
#[inline(never)]
fn math_error(message: &str) -> Option<EvalError> {
    Some(EvalError::new(ErrorKind::Math, message))
}

/// `=` with the right operand's type choosing the overload (the left one is cast to it).
fn equals(l: Val<'_>, r: Val<'_>, pending: &mut Option<EvalError>) -> bool {
    let ty = type_of(&r);
    match (cast(l, ty, pending), r) {
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        _ => false,
    }
}

impl Expr {
    /// Evaluates a sub-expression: leaves inline, the rest through [`Expr::eval`].
    #[inline(always)]
    fn eval_child<'e>(&'e self, event: &'e dyn EventAttributes) -> Out<'e> {
        match self {
            Expr::Bool(b) => (Val::Bool(*b), None),
            Expr::Int(i) => (Val::Int(*i), None),
            Expr::Str(s) => (Val::Str(Cow::Borrowed(s)), None),
            Expr::Ident(name) => ident(event, name),
            _ => self.eval(event),
        }
    }

    pub(crate) fn eval<'e>(&'e self, event: &'e dyn EventAttributes) -> Out<'e> {
        let mut pending = None;
        let value = match self {
            Expr::Bool(b) => Val::Bool(*b),
            Expr::Int(i) => Val::Int(*i),
            Expr::IntMinAbs => Val::Int(i32::MAX),
            Expr::Str(s) => Val::Str(Cow::Borrowed(s)),
            Expr::Ident(name) => return ident(event, name),
            Expr::Exists(name) => Val::Bool(attr::lookup(event, name).is_some()),
            Expr::Not(e) => {
                let v = child!(e, event, Val::Bool(false));
                let (b, err) = to_bool(v);
                keep(&mut pending, err);
                Val::Bool(!b)
            }
            Expr::Neg(e) => {
                let v = child!(e, event, Val::Int(0));
                let (i, err) = to_int(v);
                keep(&mut pending, err);
                match i.checked_neg() {
                    Some(n) => Val::Int(n),
                    None => {
                        keep(&mut pending, math_error("integer overflow in negation"));
                        Val::Int(i32::MAX)
                    }
                }
            }
            Expr::Logic(op, l, r) => {
                let lv = child!(l, event, Val::Bool(false));
                let (lb, err) = to_bool(lv);
                keep(&mut pending, err);
                match (op, lb) {
                    (LogicOp::And, false) => return (Val::Bool(false), pending),
                    (LogicOp::Or, true) => return (Val::Bool(true), pending),
                    _ => {}
                }
                let rv = child!(r, event, Val::Bool(false));
                let (rb, err) = to_bool(rv);
                keep(&mut pending, err);
                Val::Bool(match op {
                    LogicOp::And | LogicOp::Or => rb,
                    LogicOp::Xor => lb != rb,
                })
            }
            Expr::Eq(negated, l, r) => {
                let lv = child!(l, event, Val::Bool(false));
                let rv = child!(r, event, Val::Bool(false));
                Val::Bool(equals(lv, rv, &mut pending) != *negated)
            }
            Expr::Cmp(op, l, r) => {
                let lv = child!(l, event, Val::Bool(false));
                let rv = child!(r, event, Val::Bool(false));
                let (a, err) = to_int(lv);
                keep(&mut pending, err);
                let (b, err) = to_int(rv);
                keep(&mut pending, err);
                Val::Bool(match op {
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Ge => a >= b,
                })
            }
            Expr::Arith(op, l, r) => {
                let lv = child!(l, event, Val::Int(0));
                let rv = child!(r, event, Val::Int(0));
                let (a, err) = to_int(lv);
                keep(&mut pending, err);
                let (b, err) = to_int(rv);
                keep(&mut pending, err);
                let wide = i64::from(a);
                let (exact, name) = match op {
                    ArithOp::Add => (Some(wide + i64::from(b)), "addition"),
                    ArithOp::Sub => (Some(wide - i64::from(b)), "subtraction"),
                    ArithOp::Mul => (Some(wide * i64::from(b)), "multiplication"),
                    ArithOp::Div if b == 0 => (None, "division by zero"),
                    ArithOp::Div => (Some(wide / i64::from(b)), "division"),
                    ArithOp::Mod if b == 0 => (None, "modulo by zero"),
                    ArithOp::Mod => (Some(wide % i64::from(b)), "modulo"),
                };
                match exact {
                    None => {
                        keep(&mut pending, math_error(name));
                        Val::Int(0)
                    }
                    Some(x) => match i32::try_from(x) {
                        Ok(x) => Val::Int(x),
                        Err(_) => {
                            keep(&mut pending, math_error("integer overflow"));
                            Val::Int(if x > 0 { i32::MAX } else { i32::MIN })
                        }
                    },
                }
            }
            Expr::Like(negated, e, pattern) => {
                let v = child!(e, event, Val::Bool(false));
                Val::Bool(pattern.matches(&to_str(v)) != *negated)
            }
            Expr::In(negated, e, set) => {
                let v = child!(e, event, Val::Bool(false));
                let ty = type_of(&v);
                let mut found = false;
                for item in set {
                    let iv = child!(item, event, Val::Bool(false));
                    let iv = cast(iv, ty, &mut pending);
                    if iv == v {
                        found = true;
                        break;
                    }
                }
                Val::Bool(found != *negated)
            }
            Expr::Call(func, args) => {
                let zero = func.return_type().zero();
                let mut vals: Args<'e> = SmallVec::new();
                for (i, arg) in args.iter().enumerate() {
                    let v = child!(arg, event, zero);
                    vals.push(match func.param(i) {
                        Some(ty) => cast(v, ty, &mut pending),
                        None => v,
                    });
                }
                let (v, err) = call(*func, vals);
                keep(&mut pending, err);
                v
            }
            Expr::MissingFunction(name) => return (Val::Bool(false), Some(missing_function(name))),
        };
        (value, pending)
    }
}

#[cold]
#[inline(never)]
fn fn_error(message: &str) -> Option<EvalError> {
    Some(EvalError::new(ErrorKind::FunctionEvaluation, message))
}

fn int_arg(v: Option<&Val<'_>>) -> i32 {
    match v {
        Some(Val::Int(i)) => *i,
        _ => 0,
    }
}

fn str_arg<'a, 'e>(v: Option<&'a Val<'e>>) -> &'a str {
    match v {
        Some(Val::Str(s)) => s,
        _ => "",
    }
}

/// Calls a built-in on arguments already cast to its parameter types.
#[inline(never)]
fn call(func: Func, mut args: Args<'_>) -> Out<'_> {
    let s0 = || str_arg(args.first());
    let owned = |s: String| Val::Str(Cow::Owned(s));
    match func {
        Func::Length => (Val::Int(saturate(s0().chars().count())), None),
        Func::Concat => (owned(args.iter().map(|a| str_arg(Some(a))).collect()), None),
        Func::ConcatWs => {
            let sep = s0();
            let parts: Vec<&str> = args.iter().skip(1).map(|a| str_arg(Some(a))).collect();
            (owned(parts.join(sep)), None)
        }
        Func::Lower => (owned(s0().to_lowercase()), None),
        Func::Upper => (owned(s0().to_uppercase()), None),
        Func::Trim => (owned(s0().trim().to_owned()), None),
        Func::Left | Func::Right => {
            let n = int_arg(args.get(1));
            let s = s0();
            let Ok(n) = usize::try_from(n) else {
                return (owned(s.to_owned()), fn_error("negative length"));
            };
            let count = s.chars().count();
            let taken: String = if func == Func::Left {
                s.chars().take(n).collect()
            } else {
                s.chars().skip(count.saturating_sub(n)).collect()
            };
            (owned(taken), None)
        }
        Func::Substring2 | Func::Substring3 => {
            let s = s0();
            let pos = i64::from(int_arg(args.get(1)));
            let len = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
            if pos > len || pos < -len {
                return (
                    owned(String::new()),
                    fn_error("substring position out of range"),
                );
            }
            if pos == 0 {
                return (owned(String::new()), None);
            }
            let start = if pos > 0 { pos - 1 } else { len + pos };
            let take = if func == Func::Substring3 {
                let l = i64::from(int_arg(args.get(2)));
                if l < 0 {
                    return (owned(String::new()), fn_error("negative substring length"));
                }
                l
            } else {
                len
            };
            let start = usize::try_from(start).unwrap_or(0);
            let take = usize::try_from(take).unwrap_or(usize::MAX);
            (owned(s.chars().skip(start).take(take).collect()), None)
        }
        Func::Abs => {
            let i = int_arg(args.first());
            match i.checked_abs() {
                Some(a) => (Val::Int(a), None),
                None => (Val::Int(i32::MAX), math_error("integer overflow in ABS")),
            }
        }
        Func::Int => {
            let v = args.pop().unwrap_or(Val::Int(0));
            let (i, err) = to_int(v);
            (Val::Int(i), err)
        }
        Func::Bool => match args.pop() {
            Some(Val::Int(i)) => (Val::Bool(i != 0), None),
            Some(v) => {
                let (b, err) = to_bool(v);
                (Val::Bool(b), err)
            }
            None => (Val::Bool(false), None),
        },
        Func::String => {
            let v = args.pop().unwrap_or(Val::Str(Cow::Borrowed("")));
            (Val::Str(to_str(v)), None)
        }
    }
}

fn saturate(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_fast_paths_are_chosen() {
        assert_eq!(Like::compile("abc"), Like::Exact("abc".into()));
        assert_eq!(Like::compile("order.%"), Like::Prefix("order.".into()));
        assert_eq!(Like::compile("%.error"), Like::Suffix(".error".into()));
        assert_eq!(Like::compile("%mid%"), Like::Contains("mid".into()));
        assert!(Like::compile("%").matches("anything") && Like::compile("%%").matches(""));
        assert!(matches!(Like::compile("a_c"), Like::General(_)));
        assert_eq!(Like::compile("a\\%"), Like::Exact("a%".into()));
    }

    #[test]
    fn like_general_backtracks() {
        let p = Like::compile("a%b_c%");
        assert!(p.matches("axxbyc"));
        assert!(p.matches("abbxcz"));
        assert!(!p.matches("abc"));
        assert!(Like::compile("é_ü").matches("éxü"));
        assert!(Like::compile("%a%a%a%b").matches("aaaaaaab"));
        assert!(!Like::compile("%a%a%a%b").matches("aaaaaaa"));
    }
}
