//! Streaming readers for line-oriented click logs (Criteo TSV, Avazu CSV).
//!
//! A reader holds one line buffer and one record: memory does not grow with the file, so the 11 GB
//! Kaggle `train.txt` and the 45 GB Terabyte days stream through in constant memory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::skip::{BadRowPolicy, SkipReport};

/// Key used for a missing categorical value: it becomes a value of its own (frequent in Criteo).
pub const MISSING_KEY: u64 = u64::MAX;

/// Line formats the streaming reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TabularFormat {
    /// `label \t I1..I13 \t C1..C26`: Kaggle `train.txt` and Terabyte `day_N`.
    Criteo,
    /// Avazu `train.csv`: `id,click,hour,C1,banner_pos,...` (24 fields, header optional).
    Avazu,
}

pub const CRITEO_DENSE: usize = 13;
pub const CRITEO_CATS: usize = 26;
/// Avazu columns after `id` and `click`, all treated as categorical.
pub const AVAZU_CAT_NAMES: [&str; 22] = [
    "hour",
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
    "device_type",
    "device_conn_type",
    "C14",
    "C15",
    "C16",
    "C17",
    "C18",
    "C19",
    "C20",
    "C21",
];

impl TabularFormat {
    pub fn n_dense(self) -> usize {
        match self {
            TabularFormat::Criteo => CRITEO_DENSE,
            TabularFormat::Avazu => 0,
        }
    }
    pub fn n_cat(self) -> usize {
        match self {
            TabularFormat::Criteo => CRITEO_CATS,
            TabularFormat::Avazu => AVAZU_CAT_NAMES.len(),
        }
    }
    /// Field names in file order, label first (as used in error messages).
    pub fn field_names(self) -> Vec<String> {
        match self {
            TabularFormat::Criteo => {
                let mut v = vec!["label".to_string()];
                v.extend((1..=CRITEO_DENSE).map(|i| format!("I{i}")));
                v.extend((1..=CRITEO_CATS).map(|i| format!("C{i}")));
                v
            }
            TabularFormat::Avazu => {
                let mut v = vec!["id".to_string(), "click".to_string()];
                v.extend(AVAZU_CAT_NAMES.iter().map(|s| s.to_string()));
                v
            }
        }
    }
    pub fn dense_names(self) -> Vec<String> {
        (1..=self.n_dense()).map(|i| format!("I{i}")).collect()
    }
    pub fn cat_names(self) -> Vec<String> {
        match self {
            TabularFormat::Criteo => (1..=CRITEO_CATS).map(|i| format!("C{i}")).collect(),
            TabularFormat::Avazu => AVAZU_CAT_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// One parsed row before preprocessing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRecord {
    pub label: u8,
    /// Integer features as written; `None` where the field is empty.
    pub dense: Vec<Option<i64>>,
    /// Categorical keys: the 32-bit hex value for Criteo, a 64-bit FNV-1a hash of the string for
    /// Avazu; [`MISSING_KEY`] where the field is empty.
    pub cats: Vec<u64>,
}

/// 64-bit FNV-1a: a fixed, documented string hash so keys are the same on every machine and run.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Streams [`RawRecord`]s from one file (or a piece of one: [`RecordReader::over`]), applying the
/// bad-row policy.
pub struct RecordReader<R = BufReader<File>> {
    path: PathBuf,
    reader: R,
    format: TabularFormat,
    policy: BadRowPolicy,
    line_no: u64,
    buf: String,
    skips: SkipReport,
    field_names: Vec<String>,
}

impl<'a> RecordReader<&'a [u8]> {
    /// Reads lines already in memory: a piece of `path` whose first line is line `first_line`
    /// (1-based) of the file, so errors and skip reports name the file's line numbers.
    pub fn over(path: &Path, bytes: &'a [u8], first_line: u64, format: TabularFormat, policy: BadRowPolicy) -> Self {
        RecordReader {
            path: path.to_path_buf(),
            reader: bytes,
            format,
            policy,
            line_no: first_line.saturating_sub(1),
            buf: String::with_capacity(1024),
            skips: SkipReport::default(),
            field_names: format.field_names(),
        }
    }
}

impl RecordReader {
    pub fn open(path: &Path, format: TabularFormat, policy: BadRowPolicy) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(DataError::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a directory")));
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            format,
            policy,
            line_no: 0,
            buf: String::with_capacity(1024),
            skips: SkipReport::default(),
            field_names: format.field_names(),
        })
    }
}

impl<R: BufRead> RecordReader<R> {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows skipped so far under [`BadRowPolicy::Skip`].
    pub fn skips(&self) -> &SkipReport {
        &self.skips
    }

    /// Number of the last line read (1-based).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Reads the next good record into `rec`; `Ok(None)` at end of file.
    pub fn next_record(&mut self, rec: &mut RawRecord) -> Result<Option<u64>> {
        loop {
            self.buf.clear();
            let n = match self.reader.read_line(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    // Not UTF-8: treat as a malformed row rather than an I/O failure. read_line has
                    // consumed the line, so the stream stays aligned.
                    self.line_no += 1;
                    let err = self.bad(0, "line is not valid UTF-8".into());
                    self.handle(err)?;
                    continue;
                }
                Err(e) => return Err(DataError::io(&self.path, e)),
            };
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let line = self.buf.trim_end_matches(['\n', '\r']);
            if self.format == TabularFormat::Avazu && self.line_no == 1 && line.starts_with("id,") {
                continue; // header
            }
            if line.is_empty() {
                // A trailing blank line is common and carries no data; count it anyway.
                let err = self.bad(0, "empty line".into());
                self.handle(err)?;
                continue;
            }
            let parsed = match self.format {
                TabularFormat::Criteo => parse_criteo(line, rec),
                TabularFormat::Avazu => parse_avazu(line, rec),
            };
            match parsed {
                Ok(()) => return Ok(Some(self.line_no)),
                Err((field, reason)) => {
                    let err = self.bad(field, reason);
                    self.handle(err)?;
                }
            }
        }
    }

    fn bad(&self, field: usize, reason: String) -> DataError {
        let field = match field {
            usize::MAX => "(row)".to_string(),
            i => self.field_names.get(i).cloned().unwrap_or_else(|| format!("#{}", i + 1)),
        };
        DataError::BadRow { path: self.path.clone(), line: self.line_no, field, reason }
    }

    fn handle(&mut self, err: DataError) -> Result<()> {
        match self.policy {
            BadRowPolicy::Fail => Err(err),
            BadRowPolicy::Skip => {
                let reason = err.to_string();
                self.skips.record(self.line_no, &reason);
                Ok(())
            }
        }
    }
}

type FieldError = (usize, String);

fn parse_label(s: &str, idx: usize) -> std::result::Result<u8, FieldError> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err((idx, format!("label must be 0 or 1, found {s:?}"))),
    }
}

/// Parses one Criteo line (40 tab-separated fields) in one pass over its bytes. A line with the
/// wrong number of fields is reported as such even when a field also fails to parse.
pub fn parse_criteo(line: &str, rec: &mut RawRecord) -> std::result::Result<(), FieldError> {
    rec.dense.clear();
    rec.cats.clear();
    let mut first_err: Option<FieldError> = None;
    let mut n_fields = 0;
    let bytes = line.as_bytes();
    let mut start = 0;
    // Field ends: every tab (found 64 bytes at a time by memchr), then the end of the line.
    for (i, end) in memchr::memchr_iter(b'\t', bytes).chain(std::iter::once(bytes.len())).enumerate() {
        let f = &bytes[start..end];
        start = end + 1;
        n_fields = i + 1;
        if first_err.is_some() || i > CRITEO_DENSE + CRITEO_CATS {
            continue;
        }
        let parsed = if i == 0 {
            match f {
                b"0" => {
                    rec.label = 0;
                    Ok(())
                }
                b"1" => {
                    rec.label = 1;
                    Ok(())
                }
                _ => Err((0, format!("label must be 0 or 1, found {:?}", String::from_utf8_lossy(f)))),
            }
        } else if i <= CRITEO_DENSE {
            if f.is_empty() {
                rec.dense.push(None);
                Ok(())
            } else {
                parse_i64(f)
                    .map(|v| rec.dense.push(Some(v)))
                    .ok_or_else(|| (i, format!("not an integer: {:?}", String::from_utf8_lossy(f))))
            }
        } else if f.is_empty() {
            rec.cats.push(MISSING_KEY);
            Ok(())
        } else if f.len() != 8 {
            Err((i, format!("expected 8 hex digits, found {:?}", String::from_utf8_lossy(f))))
        } else {
            parse_hex8(f)
                .map(|v| rec.cats.push(v as u64))
                .ok_or_else(|| (i, format!("not hexadecimal: {:?}", String::from_utf8_lossy(f))))
        };
        if let Err(e) = parsed {
            first_err = Some(e);
        }
    }
    if n_fields != 1 + CRITEO_DENSE + CRITEO_CATS {
        return Err((usize::MAX, format!("expected 40 tab-separated fields, found {n_fields}")));
    }
    first_err.map_or(Ok(()), Err)
}

/// A decimal integer with an optional sign (as `str::parse::<i64>` accepts), or `None`.
fn parse_i64(f: &[u8]) -> Option<i64> {
    let (neg, digits) = match f {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, f),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // Accumulate negatively so i64::MIN parses too.
        v = v.checked_mul(10)?.checked_sub(d as i64)?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// Hex digit values; 0xFF for every other byte.
static HEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Eight hexadecimal digits (either case), or `None`.
fn parse_hex8(f: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    let mut bad = 0u8;
    for &b in f {
        let d = HEX[b as usize];
        bad |= d;
        v = v << 4 | (d & 15) as u32;
    }
    // Invalid digits are 0xFF in the table: bit 4 set.
    (bad & 0x10 == 0).then_some(v)
}

/// Parses one Avazu line (24 comma-separated fields).
pub fn parse_avazu(line: &str, rec: &mut RawRecord) -> std::result::Result<(), FieldError> {
    let n_fields = line.split(',').count();
    let want = 2 + AVAZU_CAT_NAMES.len();
    if n_fields != want {
        return Err((usize::MAX, format!("expected {want} comma-separated fields, found {n_fields}")));
    }
    rec.dense.clear();
    rec.cats.clear();
    for (i, f) in line.split(',').enumerate() {
        match i {
            0 => {}
            1 => rec.label = parse_label(f, 1)?,
            _ => rec.cats.push(if f.is_empty() { MISSING_KEY } else { fnv1a64(f.as_bytes()) }),
        }
    }
    Ok(())
}

/// Counts lines quickly (for fraction-based splits of files that do not fit in memory).
pub fn count_lines(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let mut last = b'\n';
    loop {
        let k = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if k == 0 {
            break;
        }
        n += memchr::memchr_iter(b'\n', &buf[..k]).count() as u64;
        last = buf[k - 1];
    }
    if last != b'\n' {
        n += 1; // final line without newline
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn good_line() -> String {
        let mut f = vec!["1".to_string()];
        f.extend((0..13).map(|i| if i == 2 { String::new() } else { format!("{}", i as i64 - 1) }));
        f.extend((0..26).map(|i| if i == 5 { String::new() } else { format!("{:08x}", i * 7919) }));
        f.join("\t")
    }

    #[test]
    fn parses_a_criteo_line() {
        let mut r = RawRecord::default();
        parse_criteo(&good_line(), &mut r).unwrap();
        assert_eq!(r.label, 1);
        assert_eq!(r.dense.len(), 13);
        assert_eq!(r.dense[0], Some(-1));
        assert_eq!(r.dense[2], None);
        assert_eq!(r.cats[5], MISSING_KEY);
        assert_eq!(r.cats[3], 3 * 7919);
    }

    fn write(lines: &[String]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    #[test]
    fn integer_and_hex_parsers_match_the_standard_library() {
        for s in [
            "0",
            "-1",
            "+7",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "",
            "-",
            "1a",
            " 1",
            "00012",
        ] {
            assert_eq!(parse_i64(s.as_bytes()), s.parse::<i64>().ok(), "{s:?}");
        }
        for s in ["00000000", "ffffffff", "DEADbeef", "0000000g", "-0000001"] {
            assert_eq!(
                parse_hex8(s.as_bytes()),
                u32::from_str_radix(s, 16).ok().filter(|_| !s.starts_with(['+', '-'])),
                "{s:?}"
            );
        }
    }

    #[test]
    fn each_malformed_kind_names_line_and_field() {
        let good = good_line();
        let mut fields: Vec<String> = good.split('\t').map(String::from).collect();
        let cases: Vec<(String, &str, &str)> = vec![
            (fields[..39].join("\t"), "(row)", "found 39"),
            (
                {
                    let mut f = fields.clone();
                    f[0] = "2".into();
                    f.join("\t")
                },
                "label",
                "0 or 1",
            ),
            (
                {
                    let mut f = fields.clone();
                    f[4] = "x1".into();
                    f.join("\t")
                },
                "I4",
                "not an integer",
            ),
            (
                {
                    let mut f = fields.clone();
                    f[20] = "zzzzzzzz".into();
                    f.join("\t")
                },
                "C7",
                "not hexadecimal",
            ),
            (
                {
                    let mut f = fields.clone();
                    f[21] = "abc".into();
                    f.join("\t")
                },
                "C8",
                "8 hex digits",
            ),
        ];
        fields.truncate(40);
        for (bad, field, reason) in cases {
            let file = write(&[good.clone(), good.clone(), bad]);
            let mut rd = RecordReader::open(file.path(), TabularFormat::Criteo, BadRowPolicy::Fail).unwrap();
            let mut rec = RawRecord::default();
            assert!(rd.next_record(&mut rec).unwrap().is_some());
            assert!(rd.next_record(&mut rec).unwrap().is_some());
            let err = rd.next_record(&mut rec).unwrap_err().to_string();
            assert!(err.contains(":3:"), "{err}");
            assert!(err.contains(&format!("`{field}`")), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }

    #[test]
    fn skip_policy_counts_exactly() {
        let good = good_line();
        let lines = vec![good.clone(), "1\t2".into(), good.clone(), "x".into(), good.clone(), "".into(), good.clone()];
        let file = write(&lines);
        let mut rd = RecordReader::open(file.path(), TabularFormat::Criteo, BadRowPolicy::Skip).unwrap();
        let mut rec = RawRecord::default();
        let mut n = 0;
        while rd.next_record(&mut rec).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 4);
        assert_eq!(rd.skips().skipped, 3);
        assert_eq!(rd.skips().first_lines, vec![2, 4, 6]);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = RecordReader::open(Path::new("/no/such/file.tsv"), TabularFormat::Criteo, BadRowPolicy::Fail)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/no/such/file.tsv"), "{err}");
    }

    #[test]
    fn parses_avazu_with_and_without_header() {
        let header = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21";
        let row = "1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79";
        let file = write(&[header.into(), row.into(), row.replace(",0,14102100", ",1,14102100")]);
        let mut rd = RecordReader::open(file.path(), TabularFormat::Avazu, BadRowPolicy::Fail).unwrap();
        let mut rec = RawRecord::default();
        assert_eq!(rd.next_record(&mut rec).unwrap(), Some(2));
        assert_eq!(rec.label, 0);
        assert_eq!(rec.cats.len(), 22);
        assert_eq!(rec.cats[0], fnv1a64(b"14102100"));
        assert_eq!(rd.next_record(&mut rec).unwrap(), Some(3));
        assert_eq!(rec.label, 1);
        assert!(rd.next_record(&mut rec).unwrap().is_none());
        let bad = write(&[row.replace(",0,14102100", ",7,14102100")]);
        let mut rd = RecordReader::open(bad.path(), TabularFormat::Avazu, BadRowPolicy::Fail).unwrap();
        let err = rd.next_record(&mut rec).unwrap_err().to_string();
        assert!(err.contains(":1:") && err.contains("`click`"), "{err}");
    }
}
