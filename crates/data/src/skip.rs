//! What to do with a malformed row, and the record of what was skipped.

use serde::{Deserialize, Serialize};

/// Policy for rows that fail to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Stop with an error naming file, line, field and reason (the default: nothing is lost silently).
    #[default]
    Fail,
    /// Skip the row, count it and remember the first few line numbers.
    Skip,
}

/// How many rows were skipped and where (first [`SkipReport::KEPT_LINES`] line numbers, 1-based).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipReport {
    pub skipped: u64,
    pub first_lines: Vec<u64>,
    /// The reason given for the first skipped row, so a systematic problem is visible.
    pub first_reason: Option<String>,
}

impl SkipReport {
    pub const KEPT_LINES: usize = 10;

    pub fn record(&mut self, line: u64, reason: &str) {
        self.skipped += 1;
        if self.first_lines.len() < Self::KEPT_LINES {
            self.first_lines.push(line);
        }
        if self.first_reason.is_none() {
            self.first_reason = Some(reason.to_string());
        }
    }

    pub fn merge(&mut self, other: &SkipReport) {
        self.skipped += other.skipped;
        for &l in &other.first_lines {
            if self.first_lines.len() < Self::KEPT_LINES {
                self.first_lines.push(l);
            }
        }
        if self.first_reason.is_none() {
            self.first_reason = other.first_reason.clone();
        }
    }
}

impl std::fmt::Display for SkipReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.skipped == 0 {
            return write!(f, "no rows skipped");
        }
        write!(f, "{} rows skipped (first lines: {:?}", self.skipped, self.first_lines)?;
        if let Some(r) = &self.first_reason {
            write!(f, "; first reason: {r}")?;
        }
        write!(f, ")")
    }
}
