//! CESQL parser: a pest grammar (`cesql.pest`) plus a Pratt parser for operator precedence.

use std::sync::LazyLock;

use pest::Parser as _;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};

use super::ParseError;
use super::eval::{ArithOp, CmpOp, Expr, Func, Like, LogicOp};
use crate::attr::AttrName;

#[derive(pest_derive::Parser)]
#[grammar = "cesql/cesql.pest"]
struct CesqlParser;

/// Maximum nesting of parentheses: the parser and evaluator recurse per level.
const MAX_DEPTH: usize = 64;
/// Maximum number of operators: bounds recursion in the Pratt parser and the evaluator.
const MAX_OPERATORS: usize = 1000;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_and, Assoc::Right)
            | Op::infix(Rule::op_or, Assoc::Right)
            | Op::infix(Rule::op_xor, Assoc::Right))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_mod, Assoc::Left))
        .op(Op::postfix(Rule::op_in))
        .op(Op::postfix(Rule::op_like))
        .op(Op::prefix(Rule::op_neg))
        .op(Op::prefix(Rule::op_not))
});

fn error_at(pair: &Pair<'_, Rule>, message: impl Into<String>) -> ParseError {
    let (line, column) = pair.as_span().start_pos().line_col();
    ParseError {
        line,
        column,
        message: message.into(),
    }
}

fn rule_name(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of expression",
        Rule::expr => "an expression",
        Rule::string => "a string literal",
        Rule::identifier => "an attribute name",
        Rule::op_like | Rule::op_in => "LIKE or IN",
        Rule::op_not | Rule::kw_not => "NOT",
        Rule::kw_like => "LIKE",
        Rule::kw_in => "IN",
        Rule::op_neg => "-",
        Rule::op_mul
        | Rule::op_div
        | Rule::op_mod
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_and
        | Rule::op_or
        | Rule::op_xor => "an operator",
        Rule::exists | Rule::kw_exists => "EXISTS",
        Rule::call | Rule::fn_name => "a function call",
        Rule::boolean => "TRUE or FALSE",
        Rule::integer => "an integer",
        other => return format!("{other:?}"),
    }
    .to_owned()
}

/// Checks parenthesis nesting before pest recurses into it.
fn check_depth(input: &str) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let (mut line, mut column) = (1usize, 0usize);
    for c in input.chars() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
        }
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(ParseError {
                            line,
                            column,
                            message: format!("parentheses nested deeper than {MAX_DEPTH}"),
                        });
                    }
                }
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    Ok(())
}

/// Parses an expression into its syntax tree.
pub(crate) fn parse(input: &str) -> Result<Expr, ParseError> {
    check_depth(input)?;
    let mut pairs = CesqlParser::parse(Rule::cesql, input).map_err(|e| {
        let e = e.renamed_rules(rule_name);
        let (line, column) = match e.line_col {
            pest::error::LineColLocation::Pos(p) => p,
            pest::error::LineColLocation::Span(p, _) => p,
        };
        ParseError {
            line,
            column,
            message: e.variant.message().into_owned(),
        }
    })?;
    let Some(root) = pairs.next() else {
        return Err(ParseError {
            line: 1,
            column: 1,
            message: "empty expression".into(),
        });
    };
    let operators = root
        .clone()
        .into_inner()
        .flatten()
        .filter(|p| is_operator(p.as_rule()))
        .count();
    if operators > MAX_OPERATORS {
        return Err(ParseError {
            line: 1,
            column: 1,
            message: format!("more than {MAX_OPERATORS} operators"),
        });
    }
    let Some(expr) = root.into_inner().find(|p| p.as_rule() == Rule::expr) else {
        return Err(ParseError {
            line: 1,
            column: 1,
            message: "empty expression".into(),
        });
    };
    let span = expr.clone();
    let tree = build(expr.into_inner())?;
    if contains_int_min_abs(&tree) {
        return Err(error_at(
            &span,
            "integer literal 2147483648 does not fit in a 32-bit signed integer",
        ));
    }
    Ok(tree)
}

fn is_operator(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::op_not
            | Rule::op_neg
            | Rule::op_like
            | Rule::op_in
            | Rule::op_mul
            | Rule::op_div
            | Rule::op_mod
            | Rule::op_add
            | Rule::op_sub
            | Rule::op_eq
            | Rule::op_ne
            | Rule::op_le
            | Rule::op_ge
            | Rule::op_lt
            | Rule::op_gt
            | Rule::op_and
            | Rule::op_or
            | Rule::op_xor
            | Rule::call
    )
}

fn contains_int_min_abs(e: &Expr) -> bool {
    match e {
        Expr::IntMinAbs => true,
        Expr::Not(e) | Expr::Neg(e) | Expr::Like(_, e, _) => contains_int_min_abs(e),
        Expr::Logic(_, l, r) | Expr::Eq(_, l, r) | Expr::Cmp(_, l, r) | Expr::Arith(_, l, r) => {
            contains_int_min_abs(l) || contains_int_min_abs(r)
        }
        Expr::In(_, e, set) => contains_int_min_abs(e) || set.iter().any(contains_int_min_abs),
        Expr::Call(_, args) => args.iter().any(contains_int_min_abs),
        _ => false,
    }
}

fn build(pairs: Pairs<'_, Rule>) -> Result<Expr, ParseError> {
    PRATT
        .map_primary(primary)
        .map_prefix(|op, rhs| {
            let rhs = rhs?;
            Ok(match op.as_rule() {
                Rule::op_neg => match rhs {
                    Expr::Int(i) => match i.checked_neg() {
                        Some(n) => Expr::Int(n),
                        None => Expr::Neg(Box::new(Expr::Int(i))),
                    },
                    Expr::IntMinAbs => Expr::Int(i32::MIN),
                    other => Expr::Neg(Box::new(other)),
                },
                _ => Expr::Not(Box::new(rhs)),
            })
        })
        .map_postfix(|lhs, op| {
            let lhs = Box::new(lhs?);
            let rule = op.as_rule();
            let mut negated = false;
            let mut set = Vec::new();
            let mut pattern = None;
            for p in op.into_inner() {
                match p.as_rule() {
                    Rule::kw_not => negated = true,
                    Rule::string => pattern = Some(unquote(&p)),
                    Rule::expr => set.push(build(p.into_inner())?),
                    _ => {}
                }
            }
            Ok(match rule {
                Rule::op_like => {
                    Expr::Like(negated, lhs, Like::compile(&pattern.unwrap_or_default()))
                }
                _ => Expr::In(negated, lhs, set),
            })
        })
        .map_infix(|lhs, op, rhs| {
            let (l, r) = (Box::new(lhs?), Box::new(rhs?));
            Ok(match op.as_rule() {
                Rule::op_and => Expr::Logic(LogicOp::And, l, r),
                Rule::op_or => Expr::Logic(LogicOp::Or, l, r),
                Rule::op_xor => Expr::Logic(LogicOp::Xor, l, r),
                Rule::op_eq => Expr::Eq(false, l, r),
                Rule::op_ne => Expr::Eq(true, l, r),
                Rule::op_lt => Expr::Cmp(CmpOp::Lt, l, r),
                Rule::op_le => Expr::Cmp(CmpOp::Le, l, r),
                Rule::op_gt => Expr::Cmp(CmpOp::Gt, l, r),
                Rule::op_ge => Expr::Cmp(CmpOp::Ge, l, r),
                Rule::op_add => Expr::Arith(ArithOp::Add, l, r),
                Rule::op_sub => Expr::Arith(ArithOp::Sub, l, r),
                Rule::op_mul => Expr::Arith(ArithOp::Mul, l, r),
                Rule::op_div => Expr::Arith(ArithOp::Div, l, r),
                _ => Expr::Arith(ArithOp::Mod, l, r),
            })
        })
        .parse(pairs)
}

fn primary(pair: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    match pair.as_rule() {
        Rule::expr => build(pair.into_inner()),
        Rule::boolean => Ok(Expr::Bool(pair.as_str().eq_ignore_ascii_case("true"))),
        Rule::integer => {
            let digits = pair.as_str().trim_start_matches('+');
            match digits.parse::<i64>() {
                Ok(i) if i <= i64::from(i32::MAX) => Ok(Expr::Int(i32::try_from(i).unwrap_or(0))),
                Ok(2_147_483_648) => Ok(Expr::IntMinAbs),
                _ => Err(error_at(
                    &pair,
                    format!(
                        "integer literal {} does not fit in a 32-bit signed integer",
                        pair.as_str()
                    ),
                )),
            }
        }
        Rule::string => Ok(Expr::Str(unquote(&pair).into_boxed_str())),
        Rule::identifier => Ok(Expr::Ident(AttrName::new(
            &pair.as_str().to_ascii_lowercase(),
        ))),
        Rule::exists => {
            let name = pair
                .into_inner()
                .find(|p| p.as_rule() == Rule::identifier)
                .map(|p| p.as_str().to_ascii_lowercase())
                .unwrap_or_default();
            Ok(Expr::Exists(AttrName::new(&name)))
        }
        Rule::call => {
            let mut inner = pair.into_inner();
            let name = inner
                .next()
                .map(|p| p.as_str().to_ascii_uppercase())
                .unwrap_or_default();
            let args = inner
                .map(|p| build(p.into_inner()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match Func::resolve(&name, args.len()) {
                Some(f) => Expr::Call(f, args),
                None => Expr::MissingFunction(format!("{name}/{}", args.len()).into()),
            })
        }
        _ => Err(error_at(&pair, "unexpected token")),
    }
}

/// Strips the quotes of a string literal and resolves `\'` / `''` (or `\"` / `""`). Any other
/// backslash is kept as written, like the reference implementation does.
fn unquote(pair: &Pair<'_, Rule>) -> String {
    let raw = pair.as_str();
    let quote = raw.chars().next().unwrap_or('\'');
    let body = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if (c == '\\' || c == quote) && chars.peek() == Some(&quote) {
            chars.next();
            out.push(quote);
        } else if c == '\\' {
            out.push(c);
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_operators_share_one_right_associative_level() {
        let e = parse("a OR b AND c").expect("parses");
        assert!(
            matches!(e, Expr::Logic(LogicOp::Or, _, ref r) if matches!(**r, Expr::Logic(LogicOp::And, ..)))
        );
        let e = parse("a AND b OR c").expect("parses");
        assert!(
            matches!(e, Expr::Logic(LogicOp::And, _, ref r) if matches!(**r, Expr::Logic(LogicOp::Or, ..)))
        );
    }

    #[test]
    fn minus_folds_into_integer_literals() {
        assert_eq!(parse("-2147483648"), Ok(Expr::Int(i32::MIN)));
        assert_eq!(
            parse("--2147483648"),
            Ok(Expr::Neg(Box::new(Expr::Int(i32::MIN))))
        );
        assert!(parse("2147483648").is_err());
        assert!(parse("99999999999999999999999").is_err());
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).is_err());
        let long = vec!["NOT"; 5000].join(" ") + " TRUE";
        assert!(parse(&long).is_err());
    }
}
