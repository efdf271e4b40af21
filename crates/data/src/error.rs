//! Errors for user data: every message names the file, and for row problems the line and field.

use std::path::PathBuf;

/// Why loading data failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read. (The I/O error is in the message, not a source,
    /// so a chain printed with `{:#}` names it once.)
    #[error("{path}: cannot read file: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// A file or directory could not be created or written (disk full, permissions).
    #[error("{path}: cannot write: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    /// A row did not parse; `line` is 1-based.
    #[error("{path}:{line}: field `{field}`: {reason}")]
    BadRow { path: PathBuf, line: u64, field: String, reason: String },
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
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        DataError::Io { path: path.into(), error }
    }
    pub(crate) fn write(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        DataError::Write { path: path.into(), error }
    }
    /// The disk (or quota) is full: no later write to the same place can succeed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, DataError::Write { error, .. } | DataError::Io { error, .. } if error.raw_os_error() == Some(libc::ENOSPC) || error.raw_os_error() == Some(libc::EDQUOT))
    }
}

pub type Result<T> = std::result::Result<T, DataError>;
