//! The Knative attribute dialects: `exact`, `prefix`, `suffix` and the legacy
//! `filter.attributes`.

use crate::attr::EventAttributes;

use crate::attr::{self, AttrName};

/// How an attribute's string form is compared with the filter's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Equal (case-sensitive).
    Exact,
    /// Starts with the value.
    Prefix,
    /// Ends with the value.
    Suffix,
    /// Legacy attributes filter: equal, or any non-empty value when the filter value is "".
    Legacy,
}

/// One dialect map: every attribute must be present and compare true.
#[derive(Clone, Debug)]
pub(crate) struct AttrFilter {
    pub(crate) mode: Mode,
    pub(crate) attrs: Vec<(AttrName, Box<str>)>,
}

impl AttrFilter {
    pub(crate) fn matches(&self, event: &dyn EventAttributes) -> bool {
        self.attrs.iter().all(|(name, want)| {
            let Some(have) = attr::lookup_str(event, name) else {
                return false;
            };
            match self.mode {
                Mode::Exact => *have == **want,
                Mode::Prefix => have.starts_with(&**want),
                Mode::Suffix => have.ends_with(&**want),
                Mode::Legacy if want.is_empty() => !have.is_empty(),
                Mode::Legacy => *have == **want,
            }
        })
    }

    /// The attribute/value pairs an event must carry exactly, for the index.
    pub(crate) fn exact_pairs(&self) -> impl Iterator<Item = (&AttrName, &str)> {
        self.attrs
            .iter()
            .filter(|(_, v)| matches!(self.mode, Mode::Exact | Mode::Legacy) && !v.is_empty())
            .map(|(k, v)| (k, &**v))
    }
}
