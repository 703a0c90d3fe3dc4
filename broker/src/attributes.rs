//! An event's attributes as evmesh keeps them: names and JSON values in the order received, in
//! one vector (a handful of entries is the rule: looked up by comparing names, not by hashing).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// Above this many entries, lookups go through a name → position index built on first use.
const INDEXED_FROM: usize = 32;

/// The names every event has, or many do: kept without an allocation of their own.
const WELL_KNOWN: [&str; 12] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "traceparent",
    "tracestate",
    "knativebrokerttl",
    "knativearrivaltime",
];

/// The static copy of `name` when it is one of [`WELL_KNOWN`].
fn well_known(name: &str) -> Option<&'static str> {
    WELL_KNOWN.iter().find(|w| **w == name).copied()
}

/// `name` as kept: borrowed when it is well known, else the owned string.
fn kept(name: String) -> Cow<'static, str> {
    well_known(&name).map_or(Cow::Owned(name), Cow::Borrowed)
}

/// The attributes and extensions of one event, in the order received, each name once.
///
/// Read it as a map: [`get`](Self::get), `attributes["name"]` (`Value::Null` for a name it
/// does not hold), iteration in order. [`EventRecord::attributes`](crate::record::EventRecord::attributes)
/// returns it; [`EventRecord::new`](crate::record::EventRecord::new) takes it or a
/// `serde_json::Map`.
///
/// ```
/// use evmesh_broker::record::Attributes;
/// let attributes = Attributes::from(serde_json::json!({
///     "specversion": "1.0", "id": "1", "source": "/shop", "type": "order.created",
/// }).as_object().cloned().unwrap_or_default());
/// assert_eq!(attributes["type"], "order.created");
/// assert_eq!(attributes.get("subject"), None);
/// let names: Vec<&str> = attributes.iter().map(|(name, _)| name).collect();
/// assert_eq!(names.len(), 4);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    entries: Vec<(Cow<'static, str>, Value)>,
    /// Name → position, for many entries only; kept up to date by inserts, dropped by removals.
    index: OnceLock<HashMap<String, usize>>,
}

impl Attributes {
    /// Empty attributes with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Attributes {
            entries: Vec::with_capacity(n),
            index: OnceLock::new(),
        }
    }

    /// The position of `name`.
    fn position(&self, name: &str) -> Option<usize> {
        if self.entries.len() < INDEXED_FROM {
            return self.entries.iter().position(|(n, _)| n == name);
        }
        self.index
            .get_or_init(|| {
                let mut index = HashMap::with_capacity(self.entries.len());
                for (i, (n, _)) in self.entries.iter().enumerate() {
                    // The first of a repeated name (there is none: `insert` replaces).
                    index.entry(n.to_string()).or_insert(i);
                }
                index
            })
            .get(name)
            .copied()
    }

    /// The value of attribute `name`.
    ///
    /// ```
    /// # use evmesh_broker::record::Attributes;
    /// let mut attributes = Attributes::default();
    /// attributes.insert("region".into(), "eu".into());
    /// assert_eq!(attributes.get("region"), Some(&serde_json::json!("eu")));
    /// ```
    pub fn get(&self, name: &str) -> Option<&Value> {
        let i = self.position(name)?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// Whether attribute `name` is there.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The attributes in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.entries.iter())
    }

    /// Sets `name` to `value`: in its place when it is there (returning the old value), else
    /// last.
    ///
    /// ```
    /// # use evmesh_broker::record::Attributes;
    /// let mut attributes = Attributes::default();
    /// attributes.insert("a".into(), 1.into());
    /// attributes.insert("b".into(), 2.into());
    /// assert_eq!(attributes.insert("a".into(), 3.into()), Some(1.into()));
    /// assert_eq!(attributes.iter().next(), Some(("a", &3.into())));
    /// ```
    pub fn insert(&mut self, name: String, value: Value) -> Option<Value> {
        if let Some(slot) = self.slot(&name) {
            return Some(std::mem::replace(slot, value));
        }
        self.push(kept(name), value);
        None
    }

    /// [`insert`](Self::insert) with a borrowed name (copied only when it is new and not a
    /// well-known one).
    pub(crate) fn insert_str(&mut self, name: &str, value: Value) -> Option<Value> {
        if let Some(slot) = self.slot(name) {
            return Some(std::mem::replace(slot, value));
        }
        let name = well_known(name).map_or_else(|| Cow::Owned(name.to_owned()), Cow::Borrowed);
        self.push(name, value);
        None
    }

    /// The value of `name`, to change in place.
    fn slot(&mut self, name: &str) -> Option<&mut Value> {
        let i = self.position(name)?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    /// Appends a name not there yet. The index, when there is one, is kept up to date rather
    /// than rebuilt: building many entries one by one stays linear.
    fn push(&mut self, name: Cow<'static, str>, value: Value) {
        if let Some(index) = self.index.get_mut() {
            index.insert(name.to_string(), self.entries.len());
        }
        self.entries.push((name, value));
    }

    /// Removes attribute `name` (the others keep their order) and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.position(name)?;
        self.index.take();
        Some(self.entries.remove(i).1)
    }

    /// The attributes as a `serde_json::Map` (a copy).
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }
}

impl PartialEq for Attributes {
    /// The same names with the same values, in any order (as JSON objects, and
    /// `serde_json::Map`, compare).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(n, v)| other.get(n) == Some(v))
    }
}

impl From<Map<String, Value>> for Attributes {
    /// In the map's order (insertion order with serde_json's `preserve_order`, else by name).
    fn from(map: Map<String, Value>) -> Self {
        Attributes {
            entries: map.into_iter().map(|(n, v)| (kept(n), v)).collect(),
            index: OnceLock::new(),
        }
    }
}

impl std::ops::Index<&str> for Attributes {
    type Output = Value;
    /// The value of `name`, `Value::Null` when it is not there (as `serde_json::Value` indexes).
    fn index(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

/// The attributes of an [`Attributes`] in order, as `(name, value)`.
#[derive(Clone, Debug)]
pub struct Iter<'a>(std::slice::Iter<'a, (Cow<'static, str>, Value)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a Value);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(n, v)| (n.as_ref(), v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a Value);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl serde::Serialize for Attributes {
    /// As a JSON object, in order.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (name, value) in self {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Attributes {
    /// From a JSON object, in order; a repeated name keeps its first place and its last value.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Attributes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Attributes, A::Error> {
                let mut out = Attributes::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some((Name(name), value)) = map.next_entry::<Name<'de>, Value>()? {
                    match name {
                        Cow::Borrowed(name) => out.insert_str(name, value),
                        Cow::Owned(name) => out.insert(name, value),
                    };
                }
                Ok(out)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A name read from JSON, borrowed from the input where it has no escapes (so a well-known
/// name is not copied at all).
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Attributes {
        let mut a = Attributes::default();
        for i in 0..n {
            a.insert(format!("a{i}"), Value::from(i));
        }
        a
    }

    #[test]
    fn insert_replaces_in_place_and_remove_keeps_the_order_with_few_and_many_entries() {
        for n in [3, INDEXED_FROM + 5] {
            let mut a = numbered(n);
            assert_eq!(
                a.insert("a1".into(), Value::from("x")),
                Some(Value::from(1))
            );
            assert_eq!(a.len(), n, "{n} entries");
            assert_eq!(a["a1"], "x");
            assert_eq!(a.remove("a0"), Some(Value::from(0)));
            assert_eq!(a.get("a0"), None);
            // Looked up after the removal: positions moved, the index with them.
            assert_eq!(a[&*format!("a{}", n - 1)], Value::from(n - 1));
            let names: Vec<&str> = a.iter().map(|(k, _)| k).collect();
            assert_eq!(names[..2], ["a1", "a2"], "{n} entries");
            a.insert("late".into(), Value::Bool(true));
            assert_eq!(a.iter().last().map(|(k, _)| k), Some("late"));
            assert!(a.contains_key("late"));
        }
    }

    #[test]
    fn many_entries_are_found_after_inserts_past_the_index() {
        let a = numbered(INDEXED_FROM * 4);
        for i in 0..INDEXED_FROM * 4 {
            assert_eq!(a[&*format!("a{i}")], Value::from(i), "a{i}");
        }
    }

    #[test]
    fn a_missing_name_indexes_as_null() {
        assert_eq!(numbered(2)["nope"], Value::Null);
        assert_eq!(numbered(INDEXED_FROM * 2)["nope"], Value::Null);
    }

    #[test]
    fn json_round_trip_keeps_the_order_and_a_repeated_name_keeps_its_last_value() {
        let a: Attributes = serde_json::from_str(r#"{"z":1,"a":2,"m":{"x":[1]},"z":3}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_string(&a).unwrap_or_default(),
            r#"{"z":3,"a":2,"m":{"x":[1]}}"#
        );
        assert_eq!(Attributes::from(a.to_map()), a);
    }

    #[test]
    fn names_with_escapes_are_read_as_the_names_they_spell() {
        let a: Attributes =
            serde_json::from_str(r#"{"typ\u0065":"t","x\u0079z":1,"id":"1"}"#).unwrap_or_default();
        assert_eq!(a["type"], "t");
        assert_eq!(a["xyz"], 1);
        assert_eq!(
            a.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["type", "xyz", "id"]
        );
    }

    #[test]
    fn attributes_compare_as_json_objects_do_in_any_order() {
        let ab: Attributes = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap_or_default();
        let ba: Attributes = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap_or_default();
        let other: Attributes = serde_json::from_str(r#"{"b":2,"a":3}"#).unwrap_or_default();
        let more: Attributes = serde_json::from_str(r#"{"b":2,"a":1,"c":3}"#).unwrap_or_default();
        assert_eq!(ab, ba);
        assert_ne!(ab, other);
        assert_ne!(ab, more);
        assert_ne!(more, ab);
    }
}
