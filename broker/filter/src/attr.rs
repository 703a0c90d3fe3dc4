//! CloudEvent attribute access shared by every dialect and by CESQL.

use std::borrow::Cow;

use chrono::SecondsFormat;
use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, Event};

/// A context attribute name, resolved once at compile time so that per-event lookups do not
/// compare strings for the well-known attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AttrName {
    SpecVersion,
    Id,
    Source,
    Type,
    Subject,
    Time,
    DataContentType,
    DataSchema,
    /// Any other name: an extension attribute.
    Ext(Box<str>),
}

impl AttrName {
    /// Resolves a (lower-case) attribute name.
    pub(crate) fn new(name: &str) -> AttrName {
        match name {
            "specversion" => AttrName::SpecVersion,
            "id" => AttrName::Id,
            "source" => AttrName::Source,
            "type" => AttrName::Type,
            "subject" => AttrName::Subject,
            "time" => AttrName::Time,
            "datacontenttype" => AttrName::DataContentType,
            "dataschema" => AttrName::DataSchema,
            other => AttrName::Ext(other.into()),
        }
    }

    /// The attribute's name as written in a filter.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            AttrName::SpecVersion => "specversion",
            AttrName::Id => "id",
            AttrName::Source => "source",
            AttrName::Type => "type",
            AttrName::Subject => "subject",
            AttrName::Time => "time",
            AttrName::DataContentType => "datacontenttype",
            AttrName::DataSchema => "dataschema",
            AttrName::Ext(name) => name,
        }
    }
}

/// A typed attribute value as found on the event.
#[derive(Debug)]
pub(crate) enum AttrValue<'e> {
    Str(Cow<'e, str>),
    Int(i64),
    Bool(bool),
}

/// Formats a `time` attribute like Go's `time.RFC3339Nano` (trailing zero fractions trimmed).
pub(crate) fn format_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Looks an attribute up with its type.
pub(crate) fn lookup<'e>(event: &'e Event, name: &AttrName) -> Option<AttrValue<'e>> {
    Some(match name {
        AttrName::SpecVersion => AttrValue::Str(Cow::Borrowed(match event.specversion() {
            SpecVersion::V03 => "0.3",
            SpecVersion::V10 => "1.0",
        })),
        AttrName::Id => AttrValue::Str(Cow::Borrowed(event.id())),
        AttrName::Source => AttrValue::Str(Cow::Borrowed(event.source().as_str())),
        AttrName::Type => AttrValue::Str(Cow::Borrowed(event.ty())),
        AttrName::Subject => AttrValue::Str(Cow::Borrowed(event.subject()?)),
        AttrName::Time => AttrValue::Str(Cow::Owned(format_time(event.time()?))),
        AttrName::DataContentType => AttrValue::Str(Cow::Borrowed(event.datacontenttype()?)),
        AttrName::DataSchema => AttrValue::Str(Cow::Borrowed(event.dataschema()?.as_str())),
        AttrName::Ext(ext) => match event.extension(ext)? {
            ExtensionValue::String(s) => AttrValue::Str(Cow::Borrowed(s.as_str())),
            ExtensionValue::Integer(i) => AttrValue::Int(*i),
            ExtensionValue::Boolean(b) => AttrValue::Bool(*b),
        },
    })
}

/// Looks an attribute up in its string form (non-string extensions are formatted).
pub(crate) fn lookup_str<'e>(event: &'e Event, name: &AttrName) -> Option<Cow<'e, str>> {
    Some(match name {
        AttrName::Type => Cow::Borrowed(event.ty()),
        AttrName::Source => Cow::Borrowed(event.source().as_str()),
        AttrName::Id => Cow::Borrowed(event.id()),
        _ => match lookup(event, name)? {
            AttrValue::Str(s) => s,
            AttrValue::Int(i) => Cow::Owned(i.to_string()),
            AttrValue::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        },
    })
}

/// Whether an attribute name is valid in a filter: `^[a-z][a-z0-9]*$`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_follow_the_knative_regex() {
        for ok in ["type", "abcdefghijklmnopqrst", "c1d2e3", "datacontenttype"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "SOURCE", "Source", "s_pace_s", "s-pace-s", "123", "😀", "a.b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn time_is_formatted_like_go_rfc3339nano() {
        let t = chrono::DateTime::parse_from_rfc3339("2018-04-26T14:48:09.500+02:00")
            .map(|t| t.with_timezone(&chrono::Utc));
        assert_eq!(
            t.as_ref().map(format_time).ok().as_deref(),
            Some("2018-04-26T12:48:09.500Z")
        );
    }
}
