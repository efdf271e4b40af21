//! `cqr data inspect --format table`: what a CSV/TSV/Parquet file holds, before any preprocessing.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use polars::prelude::{CsvParseOptions, CsvReadOptions, DataType, ParquetReader, SerReader};

use super::{bad_row, scan_records, without_lines};
use crate::error::{DataError, Result};
use crate::skip::{BadRowPolicy, SkipReport};

/// `cqr data inspect --format table`: rows, and per column its distinct and missing values, of a
/// CSV/TSV (by extension: `.tsv` is tab-separated) or Parquet file with a header. Rows of the
/// wrong width are errors, or (skip) counted.
pub fn inspect_table(path: &Path, policy: BadRowPolicy) -> Result<String> {
    use std::fmt::Write as _;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let polars_err = |e: polars::error::PolarsError| DataError::Empty {
        path: path.into(),
        reason: format!("polars could not read it: {e}"),
    };
    let mut skipped = SkipReport::default();
    let df = if ext == "parquet" {
        ParquetReader::new(File::open(path).map_err(|e| DataError::io(path, e))?).finish().map_err(polars_err)?
    } else {
        let sep = if ext == "tsv" { b'\t' } else { b',' };
        let scan = scan_records(path, sep, true)?;
        let mut drop = HashSet::new();
        for &(line, found) in &scan.bad {
            let reason = format!("expected {} fields (as on the header), found {found}", scan.width);
            bad_row(
                policy,
                &mut skipped,
                DataError::BadRow { path: path.into(), line, field: "(row)".into(), reason },
            )?;
            drop.insert(line);
        }
        let opts = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .with_parse_options(CsvParseOptions::default().with_separator(sep));
        opts.into_reader_with_file_handle(std::io::Cursor::new(without_lines(path, &scan, &drop)?))
            .finish()
            .map_err(polars_err)?
    };
    let mut out = String::new();
    let _ = writeln!(out, "rows: {}\nskipped: {}\ncolumns: {}", df.height(), skipped, df.width());
    let _ = writeln!(out, "| column | distinct | missing |\n|---|---:|---:|");
    for c in df.columns() {
        let s = c.cast(&DataType::String).map_err(polars_err)?;
        let ca = s.str().map_err(polars_err)?;
        let missing = ca.iter().filter(|v| v.is_none_or(|x| x.is_empty())).count();
        let distinct: HashSet<&str> = ca.iter().flatten().filter(|x| !x.is_empty()).collect();
        let _ =
            writeln!(out, "| {} | {} | {:.4} |", c.name(), distinct.len(), missing as f64 / df.height().max(1) as f64);
    }
    Ok(out)
}
