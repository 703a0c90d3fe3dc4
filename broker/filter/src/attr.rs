//! CloudEvent attribute access shared by every dialect and by CESQL.

use std::borrow::Cow;

use chrono::SecondsFormat;
use cloudevents::event::{Data, ExtensionValue, SpecVersion};
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

/// An attribute's value as a filter reads it: a string, or an integer or boolean extension.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue<'e> {
    /// A string attribute (every context attribute, and string extensions).
    Str(Cow<'e, str>),
    /// An integer extension.
    Int(i64),
    /// A boolean extension.
    Bool(bool),
}

/// What filters read of an event: its attributes and, for JSONPath filters, its data as JSON.
/// Implemented for [`cloudevents::Event`]; a broker implements it on its own form of an event
/// so that filtering needs no `Event` built.
///
/// ```
/// use std::borrow::Cow;
/// use evmesh_filter::{AttrValue, EventAttributes, Filter};
/// struct Typed(&'static str);
/// impl EventAttributes for Typed {
///     fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
///         (name == "type").then(|| AttrValue::Str(Cow::Borrowed(self.0)))
///     }
///     fn json_data(&self) -> Option<Cow<'_, serde_json::Value>> {
///         None
///     }
/// }
/// let f = Filter::cesql("type = 'order.created'")?;
/// assert!(f.matches(&Typed("order.created")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait EventAttributes {
    /// The attribute `name` (a context attribute or an extension, lower case), `None` when the
    /// event has none. Filters compare attributes as Knative's Go SDK holds them: `time` in UTC
    /// formatted like Go's `time.RFC3339Nano`, `dataschema` as a parsed URL, `specversion` as
    /// `1.0` or `0.3`.
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>>;

    /// The data as JSON, for JSONPath filters: `None` when there is no data or it is not JSON.
    fn json_data(&self) -> Option<Cow<'_, serde_json::Value>>;
}

impl EventAttributes for Event {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        Some(match name {
            "specversion" => AttrValue::Str(Cow::Borrowed(match self.specversion() {
                SpecVersion::V03 => "0.3",
                SpecVersion::V10 => "1.0",
            })),
            "id" => AttrValue::Str(Cow::Borrowed(self.id())),
            "source" => AttrValue::Str(Cow::Borrowed(self.source().as_str())),
            "type" => AttrValue::Str(Cow::Borrowed(self.ty())),
            "subject" => AttrValue::Str(Cow::Borrowed(self.subject()?)),
            "time" => AttrValue::Str(Cow::Owned(format_time(self.time()?))),
            "datacontenttype" => AttrValue::Str(Cow::Borrowed(self.datacontenttype()?)),
            "dataschema" => AttrValue::Str(Cow::Borrowed(self.dataschema()?.as_str())),
            ext => match self.extension(ext)? {
                ExtensionValue::String(s) => AttrValue::Str(Cow::Borrowed(s.as_str())),
                ExtensionValue::Integer(i) => AttrValue::Int(*i),
                ExtensionValue::Boolean(b) => AttrValue::Bool(*b),
            },
        })
    }

    fn json_data(&self) -> Option<Cow<'_, serde_json::Value>> {
        match self.data()? {
            Data::Json(v) => Some(Cow::Borrowed(v)),
            Data::String(s) => serde_json::from_str(s).ok().map(Cow::Owned),
            Data::Binary(b) => serde_json::from_slice(b).ok().map(Cow::Owned),
        }
    }
}

/// Formats a `time` attribute like Go's `time.RFC3339Nano` (trailing zero fractions trimmed).
///
/// ```
/// let t = chrono::DateTime::parse_from_rfc3339("2018-04-26T14:48:09.500+02:00")?;
/// let utc = t.with_timezone(&chrono::Utc);
/// assert_eq!(evmesh_filter::format_time(&utc), "2018-04-26T12:48:09.500Z");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn format_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Looks an attribute up with its type.
pub(crate) fn lookup<'e>(event: &'e dyn EventAttributes, name: &AttrName) -> Option<AttrValue<'e>> {
    event.attribute(name.as_str())
}

/// Looks an attribute up in its string form (non-string extensions are formatted).
pub(crate) fn lookup_str<'e>(
    event: &'e dyn EventAttributes,
    name: &AttrName,
) -> Option<Cow<'e, str>> {
    Some(match lookup(event, name)? {
        AttrValue::Str(s) => s,
        AttrValue::Int(i) => Cow::Owned(i.to_string()),
        AttrValue::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
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
