//! Properties over random inputs: the filter index returns exactly what a linear scan over the
//! same triggers returns (and the dialects agree with a reference model), and CESQL evaluation
//! obeys simple algebraic laws (`NOT NOT e = e`; `AND`, `OR`, `XOR` commute when both operands are
//! error-free Booleans).

use std::collections::BTreeMap;

use cloudevents::{Event, EventBuilder, EventBuilderV10};
use evmesh_filter::cesql::{Expression, Value};
use evmesh_filter::{Filter, FilterIndex};
use proptest::prelude::*;

/// The attributes of the random events and filters.
const ATTRS: [&str; 4] = ["type", "source", "subject", "region"];
const VALUES: [&str; 4] = ["a", "b", "ab", "ba"];

/// A random event: type and source always set, subject and the `region` extension optional.
#[derive(Clone, Debug)]
struct Ev {
    ty: &'static str,
    source: &'static str,
    subject: Option<&'static str>,
    region: Option<&'static str>,
}

impl Ev {
    fn get(&self, attr: &str) -> Option<&'static str> {
        match attr {
            "type" => Some(self.ty),
            "source" => Some(self.source),
            "subject" => self.subject,
            "region" => self.region,
            _ => None,
        }
    }

    fn build(&self) -> Event {
        let mut b = EventBuilderV10::new()
            .id("1")
            .ty(self.ty)
            .source(self.source);
        if let Some(s) = self.subject {
            b = b.subject(s);
        }
        if let Some(r) = self.region {
            b = b.extension("region", r);
        }
        b.build().expect("valid event")
    }
}

/// A random trigger filter, as a tree the test can both build and evaluate itself.
#[derive(Clone, Debug)]
enum Spec {
    Exact(BTreeMap<String, String>),
    Prefix(BTreeMap<String, String>),
    Suffix(BTreeMap<String, String>),
    /// Legacy `filter.attributes`: "" means "present".
    Legacy(BTreeMap<String, String>),
    All(Vec<Spec>),
    Any(Vec<Spec>),
    Not(Box<Spec>),
}

impl Spec {
    fn build(&self) -> Filter {
        match self {
            Spec::Exact(m) => Filter::exact(m).expect("exact"),
            Spec::Prefix(m) => Filter::prefix(m).expect("prefix"),
            Spec::Suffix(m) => Filter::suffix(m).expect("suffix"),
            Spec::Legacy(m) => Filter::attributes(m).expect("attributes"),
            Spec::All(v) => Filter::all(v.iter().map(Spec::build).collect()).expect("all"),
            Spec::Any(v) => Filter::any(v.iter().map(Spec::build).collect()).expect("any"),
            Spec::Not(s) => Filter::negate(s.build()),
        }
    }

    /// The reference model of Knative's dialects.
    fn holds(&self, e: &Ev) -> bool {
        let each = |m: &BTreeMap<String, String>, f: &dyn Fn(&str, &str) -> bool| {
            m.iter()
                .all(|(k, v)| e.get(k).is_some_and(|actual| f(actual, v)))
        };
        match self {
            Spec::Exact(m) => each(m, &|a, v| a == v),
            Spec::Prefix(m) => each(m, &|a, v| a.starts_with(v)),
            Spec::Suffix(m) => each(m, &|a, v| a.ends_with(v)),
            Spec::Legacy(m) => each(m, &|a, v| v.is_empty() || a == v),
            Spec::All(v) => v.iter().all(|s| s.holds(e)),
            Spec::Any(v) => v.iter().any(|s| s.holds(e)),
            Spec::Not(s) => !s.holds(e),
        }
    }
}

fn value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&VALUES[..])
}

fn attr_map(allow_empty: bool) -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(&ATTRS[..]).prop_map(str::to_owned),
        (value(), any::<bool>()).prop_map(move |(v, empty)| {
            if allow_empty && empty {
                String::new()
            } else {
                v.to_owned()
            }
        }),
        1..3,
    )
}

fn spec() -> impl Strategy<Value = Spec> {
    let leaf = prop_oneof![
        4 => attr_map(false).prop_map(Spec::Exact),
        1 => attr_map(false).prop_map(Spec::Prefix),
        1 => attr_map(false).prop_map(Spec::Suffix),
        2 => attr_map(true).prop_map(Spec::Legacy),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(Spec::All),
            prop::collection::vec(inner.clone(), 1..3).prop_map(Spec::Any),
            inner.prop_map(|s| Spec::Not(Box::new(s))),
        ]
    })
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        value(),
        value(),
        prop::option::of(value()),
        prop::option::of(value()),
    )
        .prop_map(|(ty, source, subject, region)| Ev {
            ty,
            source,
            subject,
            region,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn filter_index_returns_exactly_what_a_linear_scan_returns(
        specs in prop::collection::vec(spec(), 0..40),
        events in prop::collection::vec(ev(), 1..10),
    ) {
        let index = FilterIndex::new(specs.iter().map(Spec::build).enumerate().collect());
        let linear: Vec<(usize, Filter)> = specs.iter().map(Spec::build).enumerate().collect();
        for e in &events {
            let event = e.build();
            let mut got = Vec::new();
            index.matching(&event, &mut got);
            let scan: Vec<usize> = linear
                .iter()
                .filter(|(_, f)| f.matches(&event))
                .map(|(k, _)| *k)
                .collect();
            prop_assert_eq!(&got, &scan, "index vs linear scan for {:?}", e);
            let model: Vec<usize> = specs
                .iter()
                .enumerate()
                .filter(|(_, s)| s.holds(e))
                .map(|(k, _)| k)
                .collect();
            prop_assert_eq!(&scan, &model, "filters vs the reference model for {:?}", e);
        }
    }
}

/// Random CESQL expressions over the attributes of [`fixed_event`], mostly Boolean-valued.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("TRUE".to_owned()),
        Just("FALSE".to_owned()),
        Just("type = 'com.example'".to_owned()),
        Just("source LIKE '/s%'".to_owned()),
        Just("EXISTS subject".to_owned()),
        Just("EXISTS missing".to_owned()),
        Just("INT(num) > 10".to_owned()),
        Just("flag".to_owned()),
        Just("missing = 'x'".to_owned()),
        Just("num".to_owned()),
        Just("BOOL(num)".to_owned()),
        Just("1 / 0 = 1".to_owned()),
        any::<i32>().prop_map(|i| format!("{i} < 0")),
        "[a-z]{0,3}".prop_map(|s| format!("'{s}' = subject")),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(&["AND", "OR", "XOR"][..]),
                inner.clone()
            )
                .prop_map(|(l, op, r)| format!("({l}) {op} ({r})")),
            inner.clone().prop_map(|e| format!("NOT ({e})")),
            (inner.clone(), inner).prop_map(|(l, r)| format!("({l}) = ({r})")),
        ]
    })
}

fn fixed_event() -> Event {
    EventBuilderV10::new()
        .id("id-1")
        .source("/src")
        .ty("com.example")
        .subject("abc")
        .extension("num", "42")
        .extension("flag", true)
        .build()
        .expect("valid event")
}

fn eval(expr: &str) -> (Value, bool) {
    let parsed = Expression::parse(expr).unwrap_or_else(|e| panic!("{expr:?} parses: {e:?}"));
    let (v, err) = parsed.evaluate(&fixed_event());
    (v, err.is_none())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn not_not_e_equals_e(e in expression()) {
        if let (Value::Boolean(b), true) = eval(&e) {
            prop_assert_eq!(eval(&format!("NOT (NOT ({e}))")), (Value::Boolean(b), true));
            prop_assert_eq!(eval(&format!("NOT ({e})")), (Value::Boolean(!b), true));
        }
    }

    #[test]
    fn and_or_xor_commute_without_errors(a in expression(), b in expression()) {
        let (va, oka) = eval(&a);
        let (vb, okb) = eval(&b);
        if let (Value::Boolean(x), true, Value::Boolean(y), true) = (va, oka, vb, okb) {
            for (op, want) in [("AND", x && y), ("OR", x || y), ("XOR", x ^ y)] {
                let ab = eval(&format!("({a}) {op} ({b})"));
                let ba = eval(&format!("({b}) {op} ({a})"));
                prop_assert_eq!(&ab, &ba, "{} does not commute", op);
                prop_assert_eq!(ab, (Value::Boolean(want), true), "{}", op);
            }
        }
    }
}
