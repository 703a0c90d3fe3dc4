//! [`FilterIndex`]: finds the filters an event matches without testing them all.

use std::collections::HashMap;

use crate::attr::EventAttributes;
use rustc_hash::FxBuildHasher;

use crate::Filter;
use crate::attr::{self, AttrName};

type ValueMap = HashMap<Box<str>, Vec<u32>, FxBuildHasher>;

/// Many filters, indexed: [`FilterIndex::matching`] costs in proportion to the number of
/// matching entries (plus the non-indexable ones), not to the number of entries.
///
/// An entry whose filter requires an exact value for some attribute (a legacy attributes
/// filter, or an `exact` at the top level or inside a top-level `all`) is filed under that
/// (attribute, value); the others are tested for every event.
#[derive(Debug)]
pub struct FilterIndex<K> {
    entries: Vec<(K, Filter)>,
    /// attribute → value → entry positions (ascending).
    indexed: Vec<(AttrName, ValueMap)>,
    /// Entries tested for every event (ascending).
    scan: Vec<u32>,
    /// How many entries' filters read the event's data (JSONPath).
    data_readers: usize,
}

impl<K: Clone> FilterIndex<K> {
    /// Builds the index.
    pub fn new(entries: Vec<(K, Filter)>) -> Self {
        let mut index = FilterIndex {
            entries: Vec::with_capacity(entries.len()),
            indexed: Vec::new(),
            scan: Vec::new(),
            data_readers: 0,
        };
        for (key, filter) in entries {
            if !index.push(key, filter) {
                break;
            }
        }
        index
    }

    /// Adds one entry after the others (as if it had been last in [`new`](Self::new)'s list),
    /// without rebuilding the index. Returns `false` (and adds nothing) when the index is full
    /// (`u32::MAX` entries).
    ///
    /// ```
    /// use evmesh_filter::{Filter, FilterIndex};
    /// let of_type = |ty: &str| {
    ///     Filter::attributes(&[("type".to_string(), ty.to_string())].into()).expect("filter")
    /// };
    /// let mut index = FilterIndex::new(vec![("a", of_type("t.a"))]);
    /// assert!(index.push("b", of_type("t.b")));
    /// assert_eq!(index.len(), 2);
    /// ```
    pub fn push(&mut self, key: K, filter: Filter) -> bool {
        let Ok(i) = u32::try_from(self.entries.len()) else {
            return false;
        };
        match filter.index_key() {
            Some((name, value)) => {
                let pos = match self.indexed.iter().position(|(n, _)| *n == name) {
                    Some(pos) => pos,
                    None => {
                        self.indexed.push((name, ValueMap::default()));
                        self.indexed.len() - 1
                    }
                };
                if let Some((_, map)) = self.indexed.get_mut(pos) {
                    map.entry(value.into()).or_default().push(i);
                }
            }
            None => self.scan.push(i),
        }
        if filter.reads_data() {
            self.data_readers += 1;
        }
        self.entries.push((key, filter));
        true
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries are tested for every event (their filter could not be indexed).
    pub fn scan_len(&self) -> usize {
        self.scan.len()
    }

    /// Appends to `out` the key of every entry whose filter matches `event`, each once, in the
    /// order the entries were given. The event's data is parsed as JSON at most once however many
    /// JSONPath filters read it.
    pub fn matching(&self, event: &dyn EventAttributes, out: &mut Vec<K>) {
        if self.data_readers > 1 {
            self.matching_in(&ParsedOnce::new(event), out);
        } else {
            self.matching_in(event, out);
        }
    }

    fn matching_in(&self, event: &dyn EventAttributes, out: &mut Vec<K>) {
        let mut first: Option<&[u32]> = None;
        let mut more: Vec<u32> = Vec::new();
        for (name, map) in &self.indexed {
            let Some(value) = attr::lookup_str(event, name) else {
                continue;
            };
            if let Some(ids) = map.get(&*value) {
                match first {
                    None => first = Some(ids),
                    Some(_) => more.extend_from_slice(ids),
                }
            }
        }
        let candidates: &[u32] = match first {
            None => &[],
            Some(ids) if more.is_empty() => ids,
            Some(ids) => {
                more.extend_from_slice(ids);
                more.sort_unstable();
                &more
            }
        };
        // Merge the two ascending lists so keys come out in insertion order.
        let (mut a, mut b) = (candidates.iter().peekable(), self.scan.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            let Some(&i) = next else { break };
            if let Some((key, filter)) = usize::try_from(i).ok().and_then(|i| self.entries.get(i))
                && filter.matches(event)
            {
                out.push(key.clone());
            }
        }
    }
}

/// An event whose JSON data is parsed on the first read and kept for the others, for the length
/// of one [`FilterIndex::matching`] call.
struct ParsedOnce<'e> {
    event: &'e dyn EventAttributes,
    data: std::cell::OnceCell<Option<std::borrow::Cow<'e, serde_json::Value>>>,
}

impl<'e> ParsedOnce<'e> {
    fn new(event: &'e dyn EventAttributes) -> Self {
        ParsedOnce {
            event,
            data: std::cell::OnceCell::new(),
        }
    }
}

impl EventAttributes for ParsedOnce<'_> {
    fn attribute(&self, name: &str) -> Option<attr::AttrValue<'_>> {
        self.event.attribute(name)
    }

    fn json_data(&self) -> Option<std::borrow::Cow<'_, serde_json::Value>> {
        self.data
            .get_or_init(|| self.event.json_data())
            .as_deref()
            .map(std::borrow::Cow::Borrowed)
    }
}
