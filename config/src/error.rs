//! Configuration errors and warnings, each with the file, line and field it is about.

use std::fmt;
use std::sync::Arc;

/// Where in the YAML a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// File name (as given on the command line, or the name an embedder chose).
    pub file: Arc<str>,
    /// 1-based line; 0 when the problem is not in a file (a typed resource, named in `file`).
    pub line: usize,
    /// Field path inside the resource, e.g. `spec.delivery.backoffDelay` (empty for the document).
    pub field: String,
}

impl Location {
    /// Makes a location.
    ///
    /// ```
    /// let at = evmesh_config::Location::new("mesh.yaml".into(), 7, "spec.subscriber");
    /// assert_eq!((at.line, at.field.as_str()), (7, "spec.subscriber"));
    /// ```
    pub fn new(file: Arc<str>, line: usize, field: &str) -> Self {
        Location {
            file,
            line,
            field: field.to_string(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        // Line 0: not from a file the user wrote (a typed resource names itself in `file`).
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        Ok(())
    }
}

/// One problem found while loading or validating configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The YAML itself is malformed.
    #[error("{location}: invalid YAML: {message}")]
    Yaml {
        /// Where.
        location: Location,
        /// The parser's message.
        message: String,
    },
    /// A resource is invalid.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// Where the problem is, when known (`None` for a file that could not be read).
    ///
    /// ```
    /// let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {}\n";
    /// let errors = evmesh_config::MeshConfig::from_yaml("mesh.yaml", yaml).unwrap_err();
    /// let at = errors.errors[0].location().expect("a YAML error has a location");
    /// assert_eq!(&*at.file, "mesh.yaml");
    /// ```
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Yaml { location, .. } | ConfigError::Invalid { location, .. } => {
                Some(location)
            }
        }
    }
}

/// Something evmesh accepts but does not act on (yet): never silently ignored, always reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub location: Location,
    /// What is not supported.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.location, self.message)
    }
}

/// Every error found in one pass (a user fixes the files in one go), plus the warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigErrors {
    /// The errors, in file order.
    pub errors: Vec<ConfigError>,
    /// The warnings.
    pub warnings: Vec<Warning>,
}

impl ConfigErrors {
    /// One line per error (the [`Display`](std::fmt::Display) of this type).
    ///
    /// ```
    /// let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {}\n";
    /// let errors = evmesh_config::MeshConfig::from_yaml("mesh.yaml", yaml).unwrap_err();
    /// assert_eq!(errors.render().lines().count(), errors.errors.len());
    /// assert!(errors.render().starts_with("mesh.yaml:"));
    /// ```
    pub fn render(&self) -> String {
        self.errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
