//! Property tests: arbitrary bytes and mutated valid lines fed to every reader always give a
//! value or an error, never a panic.

use std::io::Write;

use proptest::prelude::*;

use cqr_data::inspect::inspect_tabular;
use cqr_data::movielens::load_movielens;
use cqr_data::records::{parse_avazu, parse_criteo, RawRecord};
use cqr_data::{samples, BadRowPolicy, TabularFormat};

fn criteo_lines() -> Vec<String> {
    std::fs::read_to_string(samples::terabyte_sample()).unwrap().lines().take(50).map(str::to_string).collect()
}

const AVAZU_LINE: &str = "1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79";
const MOVIELENS_LINES: &str =
    "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298413\n3::3421::4::978298147\n";

/// Replaces, inserts or deletes bytes of `line` at the given (position, byte) edits.
fn mutate(line: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut b = line.as_bytes().to_vec();
    for &(pos, byte, op) in edits {
        let p = if b.is_empty() { 0 } else { pos % (b.len() + 1) };
        match op % 3 {
            0 if p < b.len() => b[p] = byte,
            1 => b.insert(p, byte),
            _ if p < b.len() => {
                b.remove(p);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    f
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec(
        (
            any::<usize>(),
            prop_oneof![Just(b'\t'), Just(b','), Just(b':'), Just(b'\n'), Just(b'-'), any::<u8>()],
            any::<u8>(),
        ),
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn line_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), line in 0usize..50, e in edits()) {
        let mut rec = RawRecord::default();
        let s = String::from_utf8_lossy(&bytes);
        let _ = parse_criteo(&s, &mut rec);
        let _ = parse_avazu(&s, &mut rec);
        let lines = criteo_lines();
        let m = mutate(&lines[line % lines.len()], &e);
        if parse_criteo(&m, &mut rec).is_ok() {
            prop_assert_eq!(rec.cats.len(), 26);
        }
        let _ = parse_avazu(&mutate(AVAZU_LINE, &e), &mut rec);
    }

    #[test]
    fn file_readers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), e in edits(), skip in any::<bool>()) {
        let policy = if skip { BadRowPolicy::Skip } else { BadRowPolicy::Fail };
        for data in [bytes.clone(), {
            let mut v = criteo_lines()[..5].join("\n").into_bytes();
            v.extend(mutate(&criteo_lines()[5], &e).into_bytes());
            v
        }] {
            let f = write_temp(&data);
            let _ = inspect_tabular(f.path(), TabularFormat::Criteo, policy);
            let _ = inspect_tabular(f.path(), TabularFormat::Avazu, policy);
            let _ = load_movielens(f.path(), None, policy);
        }
        let f = write_temp(mutate(MOVIELENS_LINES, &e).as_bytes());
        let _ = load_movielens(f.path(), None, policy);
        let f = write_temp(format!("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21\n{}\n", mutate(AVAZU_LINE, &e)).as_bytes());
        let _ = inspect_tabular(f.path(), TabularFormat::Avazu, policy);
    }
}

/// A CSV/TSV table of `rows` rows and 4 columns (label, a number, two categories).
#[cfg(feature = "tables")]
fn table_text(sep: char, rows: usize) -> String {
    let mut s = format!("y{sep}n{sep}a{sep}b\n");
    for i in 0..rows {
        s.push_str(&format!("{}{sep}{}{sep}a{}{sep}b{}\n", i % 2, i % 9, i % 5, i % 3));
    }
    s
}

#[cfg(feature = "tables")]
fn table_config(path: &std::path::Path, tsv: bool, policy: BadRowPolicy) -> cqr_data::TableConfig {
    use cqr_data::table::{ColumnRef, NumericTransform};
    cqr_data::TableConfig {
        path: path.into(),
        format: if tsv { cqr_data::TableFormat::Tsv } else { cqr_data::TableFormat::Csv },
        val_path: None,
        test_path: None,
        header: true,
        label: Some(ColumnRef::Name("y".into())),
        categorical: vec![ColumnRef::Name("a".into()), ColumnRef::Name("b".into())],
        numeric: vec![ColumnRef::Name("n".into())],
        numeric_transform: NumericTransform::Log1p,
        preprocess: cqr_data::PreprocessOptions { bad_rows: policy, ..Default::default() },
    }
}

#[cfg(feature = "tables")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A row with a field too few or too many is never read as data: an error naming its line
    /// (fail), or one skipped row on that line (skip).
    #[test]
    fn a_row_of_the_wrong_width_is_never_data(row in 0usize..40, longer in any::<bool>(), tsv in any::<bool>(), skip in any::<bool>()) {
        let sep = if tsv { '\t' } else { ',' };
        let mut lines: Vec<String> = table_text(sep, 40).lines().map(str::to_string).collect();
        let l = &mut lines[row + 1];
        if longer { l.push_str(&format!("{sep}x")) } else { *l = l[..l.rfind(sep).unwrap()].to_string() }
        let f = write_temp(format!("{}\n", lines.join("\n")).as_bytes());
        let policy = if skip { BadRowPolicy::Skip } else { BadRowPolicy::Fail };
        let line = row as u64 + 2;
        match cqr_data::load_table(&table_config(f.path(), tsv, policy), cqr_data::RowSink::memory()) {
            Ok(ds) => {
                prop_assert!(skip, "fail policy accepted a bad row");
                prop_assert_eq!((ds.n_rows(), ds.skipped.skipped, ds.skipped.first_lines.clone()), (39, 1, vec![line]));
            }
            Err(e) => {
                prop_assert!(!skip, "{}", e);
                let e = e.to_string();
                prop_assert!(e.contains(&format!(":{line}:")) && e.contains("expected 4 fields"), "{}", e);
            }
        }
    }
}
