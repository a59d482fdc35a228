//! The one error type of policy loading: where in which file, and what was expected.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An error found while loading a policy file.
///
/// It names the file, the 1-based line and column of the offending text and what was
/// expected there. Its `Display` is one line in the usual `file:line:column: message`
/// shape, for example
/// `policy.toml:12:9: unknown executor "gpu" in route 2; expected one of: cpu, io, net`.
///
/// The predicates (`is_syntax`, `is_unknown_key`, ...) say what kind of mistake it is;
/// the kinds may grow, so match on the predicates rather than on the text.
#[derive(Clone)]
pub struct ConfigError {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: Kind,
    origin: PathBuf,
    location: Option<Location>,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

#[derive(Clone, Copy, Debug)]
struct Location {
    line: usize,
    column: usize,
    span: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Io,
    Syntax,
    UnknownKey,
    MissingKey,
    UnknownExecutor,
    UnknownBackend,
    InvalidValue,
    Build,
}

impl ConfigError {
    pub(crate) fn new(kind: Kind, origin: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            inner: Box::new(Inner {
                kind,
                origin: origin.to_path_buf(),
                location: None,
                message: message.into(),
                source: None,
            }),
        }
    }

    /// Attaches the position of `span` in `text` (which must be the text of `origin`).
    pub(crate) fn at(mut self, text: &str, span: Range<usize>) -> Self {
        let (line, column) = line_column(text, span.start);
        self.inner.location = Some(Location {
            line,
            column,
            span: (span.start, span.end),
        });
        self
    }

    pub(crate) fn with_source(mut self, source: Arc<dyn std::error::Error + Send + Sync>) -> Self {
        self.inner.source = Some(source);
        self
    }

    /// The file the error is in (for a policy given as a string, the name it was given).
    pub fn path(&self) -> &Path {
        &self.inner.origin
    }

    /// The 1-based line of the offending text, when the error has a position.
    pub fn line(&self) -> Option<usize> {
        self.inner.location.map(|l| l.line)
    }

    /// The 1-based column (in characters) of the offending text, when the error has a position.
    pub fn column(&self) -> Option<usize> {
        self.inner.location.map(|l| l.column)
    }

    /// The byte range of the offending text in the file, when the error has a position.
    pub fn span(&self) -> Option<Range<usize>> {
        self.inner.location.map(|l| l.span.0..l.span.1)
    }

    /// What went wrong and what was expected, without the file and position.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The file could not be read.
    pub fn is_io(&self) -> bool {
        self.inner.kind == Kind::Io
    }

    /// The file is not valid TOML.
    pub fn is_syntax(&self) -> bool {
        self.inner.kind == Kind::Syntax
    }

    /// A key the schema (or the executor's backend) does not know.
    pub fn is_unknown_key(&self) -> bool {
        self.inner.kind == Kind::UnknownKey
    }

    /// A required key is absent.
    pub fn is_missing_key(&self) -> bool {
        self.inner.kind == Kind::MissingKey
    }

    /// A route or `[defaults]` names an executor that `[executors]` does not define.
    pub fn is_unknown_executor(&self) -> bool {
        self.inner.kind == Kind::UnknownExecutor
    }

    /// An executor names a `backend` no factory is registered for.
    pub fn is_unknown_backend(&self) -> bool {
        self.inner.kind == Kind::UnknownBackend
    }

    /// A value of the wrong type or out of range: a bad duration, rate, glob, count, ...
    pub fn is_invalid_value(&self) -> bool {
        self.inner.kind == Kind::InvalidValue
    }

    /// The policy was valid but a backend failed to build its executor.
    pub fn is_build(&self) -> bool {
        self.inner.kind == Kind::Build
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.inner.origin.display();
        match self.inner.location {
            Some(l) => write!(
                f,
                "{origin}:{}:{}: {}",
                l.line, l.column, self.inner.message
            ),
            None => write!(f, "{origin}: {}", self.inner.message),
        }
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("kind", &self.inner.kind)
            .field("path", &self.inner.origin)
            .field("location", &self.inner.location)
            .field("message", &self.inner.message)
            .finish()
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// 1-based line and column (counted in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_column_is_one_based_and_counts_chars() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 3), (2, 1));
        // 'é' is two bytes; 'f' sits on line 3 column 1, the newline before it at column 4.
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 100), (3, 2));
    }
}
