//! Errors for user data: every message names the file, and for row problems the line and field.

use std::path::PathBuf;

/// Why loading data failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A row did not parse; `line` is 1-based.
    #[error("{path}:{line}: field `{field}`: {reason}")]
    BadRow {
        path: PathBuf,
        line: u64,
        field: String,
        reason: String,
    },
    /// The file parsed but holds nothing usable (e.g. empty, or every row skipped).
    #[error("{path}: {reason}")]
    Empty { path: PathBuf, reason: String },
    /// Options that cannot work, found before reading anything.
    #[error("invalid data options: {0}")]
    Options(String),
    /// The on-disk cache is unreadable; callers rebuild it.
    #[error("cache file {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;
