//! libsvm/libfm text files (plain `label index:value ...` or field-aware
//! `label field:index:value ...`; see the parent module's docs), read into the parent's raw rows.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{bad_row, parse_label, Names, Raw};
use crate::error::{DataError, Result};
use crate::preprocess::PreprocessOptions;
use crate::records::MISSING_KEY;
use crate::skip::SkipReport;

/// Reads a libsvm/libfm file (plain or field-aware); returns its rows and the field names.
pub(super) fn read_svm(path: &Path, opts: &PreprocessOptions, skipped: &mut SkipReport) -> Result<(Raw, Names)> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut rows: Vec<(u64, u8, Vec<(usize, u64)>)> = Vec::new();
    let mut n_fields = 0usize;
    let mut plain_width: Option<(usize, u64)> = None;
    let limit = opts.max_rows.unwrap_or(u64::MAX);
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line_no = i as u64 + 1;
        if line_no > limit {
            break;
        }
        let bytes = line.map_err(|e| DataError::io(path, e))?;
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| ("(row)".to_string(), "line is not valid UTF-8".to_string()))
            .and_then(|l| parse_svm_line(l.trim_end_matches('\r')));
        let parsed = parsed.and_then(|(y, feats, aware)| {
            if !aware {
                match plain_width {
                    None => plain_width = Some((feats.len(), line_no)),
                    Some((w, at)) if w != feats.len() => return Err(("(row)".into(), format!("{} index:value pairs, but line {at} has {w} (plain libsvm/libfm: the k-th pair is field k)", feats.len()))),
                    _ => {}
                }
            }
            Ok((y, feats))
        });
        match parsed {
            Ok((y, feats)) => {
                n_fields = n_fields.max(feats.iter().map(|f| f.0 + 1).max().unwrap_or(0));
                rows.push((line_no, y, feats));
            }
            Err((field, reason)) => {
                bad_row(opts.bad_rows, skipped, DataError::BadRow { path: path.into(), line: line_no, field, reason })?
            }
        }
    }
    let mut raw = Raw::default();
    for (_, y, feats) in rows {
        let start = raw.keys.len();
        raw.keys.resize(start + n_fields, MISSING_KEY);
        for (f, idx) in feats {
            raw.keys[start + f] = idx;
        }
        raw.labels.push(y);
    }
    Ok((raw, (vec![], (0..n_fields).map(|f| format!("field{f}")).collect())))
}

/// `label idx:val ...` (plain: field = position) or `label field:idx:val ...` (field-aware).
/// Returns the label, the (field, feature index) pairs and whether the line is field-aware.
fn parse_svm_line(line: &str) -> std::result::Result<(u8, Vec<(usize, u64)>, bool), (String, String)> {
    let mut toks = line.split_ascii_whitespace();
    let y = parse_label(toks.next()).map_err(|e| ("label".to_string(), e))?;
    let mut feats = Vec::new();
    let mut aware = false;
    for (k, t) in toks.enumerate() {
        let field_name = format!("pair {}", k + 1);
        let parts: Vec<&str> = t.split(':').collect();
        let (field, idx, val) = match parts[..] {
            [i, v] => (k, i, v),
            [f, i, v] => {
                aware = true;
                (
                    f.parse::<usize>()
                        .map_err(|_| (field_name.clone(), format!("field is not a non-negative integer: {f:?}")))?,
                    i,
                    v,
                )
            }
            _ => return Err((field_name, format!("expected index:value or field:index:value, found {t:?}"))),
        };
        if field >= 10_000 {
            return Err((field_name, format!("field {field} is implausibly large (at most 9999 fields)")));
        }
        let idx: u64 =
            idx.parse().map_err(|_| (field_name.clone(), format!("index is not a non-negative integer: {idx:?}")))?;
        match val.parse::<f64>() {
            Ok(1.0) => {}
            _ => {
                return Err((
                    field_name,
                    format!(
                        "value {val:?}: only one-hot (value 1) features are supported; other values would be dropped"
                    ),
                ))
            }
        }
        feats.push((field, idx));
    }
    if aware && feats.len() != feats.iter().map(|f| f.0).collect::<std::collections::BTreeSet<_>>().len() {
        return Err(("(row)".into(), "a field appears twice on the line".into()));
    }
    Ok((y, feats, aware))
}
