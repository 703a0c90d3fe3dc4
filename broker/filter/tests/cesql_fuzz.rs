//! Property tests: the CESQL parser and evaluator never panic and always finish, on arbitrary
//! strings and on random grammar-shaped expressions.

use cloudevents::{Event, EventBuilder, EventBuilderV10};
use evmesh_filter::Filter;
use evmesh_filter::cesql::{ErrorKind, Expression};
use proptest::prelude::*;

fn fixed_event() -> Event {
    EventBuilderV10::new()
        .id("id-1")
        .source("/fuzz")
        .ty("com.example.fuzz")
        .subject("sub")
        .time("2024-01-02T03:04:05Z")
        .extension("num", "42")
        .extension("big", 9_999_999_999i64)
        .extension("flag", true)
        .extension("neg", -7i64)
        .build()
        .expect("valid event")
}

fn check(input: &str) {
    let event = fixed_event();
    match Expression::parse(input) {
        Ok(expr) => {
            let (_, error) = expr.evaluate(&event);
            if let Some(e) = error {
                assert_ne!(e.kind, ErrorKind::Parse, "evaluation raised a parse error");
            }
        }
        Err(e) => {
            assert!(e.column >= 1 && e.line >= 1, "bad position in {e:?}");
        }
    }
    if let Ok(f) = Filter::cesql(input) {
        let _ = f.matches(&event);
    }
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i32>().prop_map(|i| i.to_string()),
        Just("2147483647".to_owned()),
        Just("-2147483648".to_owned()),
        Just("0".to_owned()),
        prop_oneof![Just("TRUE"), Just("false"), Just("tRuE")].prop_map(str::to_owned),
        "([a-z0-9%_ ]|\\\\[%_]){0,8}".prop_map(|s| format!("'{s}'")),
        "[A-Za-z0-9 ]{0,8}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id"),
        Just("source"),
        Just("type"),
        Just("subject"),
        Just("time"),
        Just("specversion"),
        Just("datacontenttype"),
        Just("num"),
        Just("big"),
        Just("flag"),
        Just("neg"),
        Just("missing"),
        Just("TYPE"),
    ]
    .prop_map(str::to_owned)
}

fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        literal(),
        identifier(),
        identifier().prop_map(|i| format!("EXISTS {i}"))
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        let binop = prop_oneof![
            Just("AND"),
            Just("or"),
            Just("XOR"),
            Just("="),
            Just("!="),
            Just("<>"),
            Just("<"),
            Just("<="),
            Just(">"),
            Just(">="),
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("%"),
        ];
        let func = prop_oneof![
            Just("LENGTH"),
            Just("CONCAT"),
            Just("CONCAT_WS"),
            Just("lower"),
            Just("UPPER"),
            Just("TRIM"),
            Just("LEFT"),
            Just("RIGHT"),
            Just("SUBSTRING"),
            Just("ABS"),
            Just("INT"),
            Just("BOOL"),
            Just("STRING"),
            Just("NOPE"),
        ];
        prop_oneof![
            (inner.clone(), binop, inner.clone()).prop_map(|(l, op, r)| format!("{l} {op} {r}")),
            inner.clone().prop_map(|e| format!("NOT {e}")),
            inner.clone().prop_map(|e| format!("-{e}")),
            inner.clone().prop_map(|e| format!("({e})")),
            (inner.clone(), "([a-z%_]|\\\\[%_]){0,6}", any::<bool>())
                .prop_map(|(e, p, not)| format!("{e} {}LIKE '{p}'", if not { "NOT " } else { "" })),
            (
                inner.clone(),
                prop::collection::vec(inner.clone(), 1..4),
                any::<bool>()
            )
                .prop_map(|(e, set, not)| format!(
                    "{e} {}IN ({})",
                    if not { "NOT " } else { "" },
                    set.join(", ")
                )),
            (func, prop::collection::vec(inner, 0..4))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_strings_never_panic(input in ".{0,200}") {
        check(&input);
    }

    #[test]
    fn token_soup_never_panics(
        tokens in prop::collection::vec(
            prop_oneof![
                literal(),
                identifier(),
                prop_oneof![
                    Just("("), Just(")"), Just(","), Just("NOT"), Just("AND"), Just("LIKE"),
                    Just("IN"), Just("EXISTS"), Just("-"), Just("+"), Just("="), Just("'"),
                    Just("\""), Just("\\"), Just("SUBSTRING"),
                ].prop_map(str::to_owned),
            ],
            0..30,
        )
    ) {
        check(&tokens.join(" "));
        check(&tokens.concat());
    }

    #[test]
    fn grammar_shaped_expressions_parse_and_evaluate(input in expression()) {
        let parsed = Expression::parse(&input);
        prop_assert!(parsed.is_ok(), "{input:?}: {parsed:?}");
        check(&input);
    }
}

#[test]
fn pathological_inputs_finish() {
    check(&"(".repeat(100_000));
    check(&"NOT ".repeat(50_000));
    check(&"-".repeat(100_000));
    check(&format!(
        "'{}' LIKE '{}b'",
        "a".repeat(5_000),
        "%a".repeat(200)
    ));
    check(&vec!["1"; 5_000].join(" + "));
    check(&"'unterminated".repeat(1000));
}
