//! YAML loading: multi-document Knative files into JSON values plus a field-path → line map.
//!
//! saphyr parses the YAML with positions; every node's line is recorded under its field path
//! (`spec.delivery.backoffDelay`, `spec.filters[0].cesql`), so that type errors, unknown fields
//! and semantic validation errors can all name the file, line and field.

use std::collections::HashMap;
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::error::{ConfigError, Location};

/// One YAML document of a file, as JSON, with the line of every field path.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file (or name given by the caller) it came from.
    pub file: Arc<str>,
    /// 1-based line where the document starts.
    pub line: usize,
    /// The document as a JSON value.
    pub value: Value,
    lines: HashMap<String, usize>,
}

impl Document {
    /// A document from an already parsed value (e.g. a resource stored or sent as JSON); its
    /// fields have no lines of their own.
    pub fn from_value(file: &str, value: Value) -> Document {
        Document {
            file: Arc::from(file),
            line: 1,
            value,
            lines: HashMap::new(),
        }
    }

    /// The location of a field path (e.g. `spec.broker`); falls back to the nearest ancestor that
    /// has a recorded line, then to the document start.
    pub fn locate(&self, path: &str) -> Location {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Location::new(self.file.clone(), *line, path);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Location::new(self.file.clone(), self.line, path),
            }
        }
    }
}

/// Largest YAML input evmesh reads: a file, standard input or a request body (8 MiB). Parsing
/// takes many times the input's size in memory, so larger input is refused with an error.
pub const MAX_YAML_BYTES: usize = 8 * 1024 * 1024;

/// Reads a YAML file of at most [`MAX_YAML_BYTES`], without reading further than the limit
/// (so `/dev/zero` or a runaway file is refused, not read to the end).
pub fn read_yaml_file(path: &std::path::Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    read_yaml(file)
}

/// Reads YAML text of at most [`MAX_YAML_BYTES`] from `input` (a file, standard input).
pub fn read_yaml(input: impl std::io::Read) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    input
        .take(MAX_YAML_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > MAX_YAML_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())
}

fn too_large() -> String {
    format!("is larger than the limit of {MAX_YAML_BYTES} bytes (8 MiB) of YAML input")
}

/// Parses every YAML document in `text`. Empty documents are skipped. Text longer than
/// [`MAX_YAML_BYTES`] is an error.
pub fn load_str(file: &str, text: &str) -> Result<Vec<Document>, ConfigError> {
    let file: Arc<str> = Arc::from(file);
    if text.len() > MAX_YAML_BYTES {
        return Err(ConfigError::Yaml {
            location: Location::new(file, 1, ""),
            message: too_large(),
        });
    }
    let docs = MarkedYaml::load_from_str(text).map_err(|e| ConfigError::Yaml {
        location: Location::new(file.clone(), e.marker().line(), ""),
        message: e.info().to_string(),
    })?;
    let mut out = Vec::new();
    for doc in &docs {
        let mut lines = HashMap::new();
        let value = to_json(doc, String::new(), &mut lines, &file)?;
        if value.is_null() {
            continue;
        }
        out.push(Document {
            file: file.clone(),
            line: doc.span.start.line(),
            value,
            lines,
        });
    }
    Ok(out)
}

fn to_json(
    node: &MarkedYaml<'_>,
    path: String,
    lines: &mut HashMap<String, usize>,
    file: &Arc<str>,
) -> Result<Value, ConfigError> {
    let line = node.span.start.line();
    lines.entry(path.clone()).or_insert(line);
    Ok(match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(s, _, _) => Value::String(s.to_string()),
        YamlData::Sequence(items) => {
            let mut v = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                v.push(to_json(item, format!("{path}[{i}]"), lines, file)?);
            }
            Value::Array(v)
        }
        YamlData::Mapping(map) => {
            let mut m = Map::new();
            for (k, v) in map.iter() {
                let key = match &k.data {
                    YamlData::Value(s) => match scalar(s) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    YamlData::Representation(s, _, _) => s.to_string(),
                    _ => {
                        return Err(ConfigError::Yaml {
                            location: Location::new(file.clone(), k.span.start.line(), &path),
                            message: "mapping keys must be scalars".into(),
                        });
                    }
                };
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                lines.insert(child.clone(), k.span.start.line());
                let value = to_json(v, child, lines, file)?;
                m.insert(key, value);
            }
            Value::Object(m)
        }
        YamlData::Tagged(_, inner) => to_json(inner, path, lines, file)?,
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(ConfigError::Yaml {
                location: Location::new(file.clone(), line, &path),
                message: "unsupported or invalid YAML value (aliases are not supported)".into(),
            });
        }
    })
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lines_of_nested_fields_across_documents() {
        let text = "a: 1\n---\nkind: Trigger\nspec:\n  filters:\n    - cesql: \"x\"\n";
        let docs = load_str("f.yaml", text).expect("valid yaml");
        assert_eq!(docs.len(), 2);
        let loc = docs[1].locate("spec.filters[0].cesql");
        assert_eq!(loc.line, 6);
        assert_eq!(docs[1].locate("spec.nothing.here").line, 4);
    }

    #[test]
    fn syntax_error_names_line() {
        let err = load_str("f.yaml", "a: 1\nb: [1, 2\n").expect_err("broken yaml");
        assert!(err.to_string().starts_with("f.yaml:"), "{err}");
    }
}
