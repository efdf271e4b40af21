//! Failure behaviour, automated: arbitrary YAML never panics the parser; a sweep killed with
//! SIGKILL resumes to tables identical to an uninterrupted run; two shards writing one results
//! directory at once both finish with every cell once; unwritable and missing directories give
//! clear errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use cqr_runner::config::parse_experiment;
use cqr_runner::frames::{f64s, read_parquet, strs};

const EXP: &str = r#"
name: fail
dataset:
  kind: synthetic_gmf
  users: 200
  items: 200
  rows: 20000
model:
  kind: gmf
  dim: 8
training:
  lr: 0.01
  epochs: 2
  batch_size: 256
methods:
  - name: dense
  - name: hashing
  - name: cqr
    options: { n_chunks: 2 }
  - name: qr
budgets: [320, 640]
seeds: [0, 1]
"#;

fn cqr(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cqr")).args(args).output().unwrap()
}

fn write_exp(dir: &Path) -> String {
    let p = dir.join("fail.yaml");
    std::fs::write(&p, EXP).unwrap();
    p.to_str().unwrap().to_string()
}

fn finished(results: &Path) -> usize {
    std::fs::read_dir(results.join("cells"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().join("record.json").exists())
                .count()
        })
        .unwrap_or(0)
}

/// Every metric column of the summary, by cell id (timings, memory and speed left out).
fn metrics(results: &Path) -> BTreeMap<String, Vec<u64>> {
    let df = read_parquet(&results.join("summary.parquet")).unwrap();
    let ids = strs(&df, "cell_id").unwrap();
    let cols = [
        "val_bce",
        "val_auc",
        "best_val_auc",
        "test_bce",
        "test_auc",
        "params",
        "total_bytes",
        "train_total_bytes",
        "index_bytes",
    ];
    let vals: Vec<Vec<f64>> = cols.iter().map(|c| f64s(&df, c).unwrap()).collect();
    let mut out = BTreeMap::new();
    for (i, id) in ids.into_iter().enumerate() {
        assert!(out.insert(id, vals.iter().map(|v| v[i].to_bits()).collect()).is_none(), "a cell appears twice");
    }
    out
}

#[test]
fn killed_sweep_resumes_to_identical_tables() {
    let dir = tempfile::tempdir().unwrap();
    let exp = write_exp(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = cqr(&["sweep", &exp, "--results", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Start, SIGKILL once the first cell is on disk, resume.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cqr"))
        .args(["sweep", &exp, "--results", b.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while finished(&b) == 0 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = finished(&b);
    assert!((1..14).contains(&at_kill), "killed after {at_kill} of 14 cells");
    let out = cqr(&["sweep", &exp, "--results", b.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} cells ran (", 14 - at_kill))
            && err.contains(&format!("infeasible at their budget), {at_kill} were already done")),
        "{err}"
    );
    assert_eq!(metrics(&a), metrics(&b), "resumed tables differ from the uninterrupted run");
}

#[test]
fn concurrent_shards_merge_every_cell_once() {
    let dir = tempfile::tempdir().unwrap();
    let exp = write_exp(dir.path());
    let r = dir.path().join("r");
    let spawn = |shard: &str| {
        Command::new(env!("CARGO_BIN_EXE_cqr"))
            .args(["sweep", &exp, "--results", r.to_str().unwrap(), "--shard", shard])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c0, c1) = (spawn("0/2"), spawn("1/2"));
    for c in [c0, c1] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(finished(&r), 14);
    assert_eq!(metrics(&r).len(), 14, "the merged summary holds every cell once");
}

#[test]
fn unwritable_and_missing_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let exp = write_exp(dir.path());
    // /proc is read-only even for root (these tests may run as root, where permissions do not bite).
    let out = cqr(&["sweep", &exp, "--results", "/proc/cqr-results", "--max-cells", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/proc/cqr-results") && !err.contains("panicked"), "{err}");
    // A results path that is a file.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let out = cqr(&["sweep", &exp, "--results", file.to_str().unwrap(), "--max-cells", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("plain-file") && !err.contains("panicked"), "{err}");
    // Plot, report and verify on a directory that does not exist.
    let missing = dir.path().join("missing").to_str().unwrap().to_string();
    for args in
        [vec!["plot", &missing], vec!["report", &missing], vec!["sweep", &exp, "--results", &missing, "--verify", "1"]]
    {
        let out = cqr(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("missing") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn verify_reruns_cells_bit_for_bit_and_reports_a_difference() {
    let dir = tempfile::tempdir().unwrap();
    let exp = write_exp(dir.path());
    let r = dir.path().join("v");
    let rs = r.to_str().unwrap();
    assert!(cqr(&["sweep", &exp, "--results", rs, "--max-cells", "3"]).status.success());
    let out = cqr(&["sweep", &exp, "--results", rs, "--verify", "2"]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && so.contains("2 cells re-run: every metric identical"),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Tamper with one stored metric: verify must name it and fail.
    let cells: Vec<_> = std::fs::read_dir(r.join("cells"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    for c in &cells {
        let p = c.path().join("record.json");
        let text = std::fs::read_to_string(&p).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(t) = v.pointer_mut("/output/reported/test_auc") {
            *t = serde_json::json!(0.123);
        }
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    }
    let out = cqr(&["sweep", &exp, "--results", rs, "--verify", "1"]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && so.contains("DIFFERENT") && so.contains("reported.test_auc: stored 0.123"),
        "{so}"
    );
}

fn valid_lines() -> Vec<&'static str> {
    EXP.lines().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn experiment_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), line in 0usize..40, junk in prop::collection::vec(prop_oneof![Just(b':'), Just(b' '), Just(b'-'), Just(b'['), Just(b'{'), Just(b'\n'), Just(b'0'), Just(b'9'), any::<u8>()], 0..12), drop_line in any::<bool>()) {
        let _ = parse_experiment(&String::from_utf8_lossy(&bytes), Path::new("fuzz.yaml"));
        // A valid file with one line mutated or dropped.
        let mut lines: Vec<String> = valid_lines().into_iter().map(str::to_string).collect();
        let i = line % lines.len();
        if drop_line {
            lines.remove(i);
        } else {
            let cut = lines[i].len() / 2;
            let mut b = lines[i].as_bytes()[..cut].to_vec();
            b.extend(&junk);
            lines[i] = String::from_utf8_lossy(&b).into_owned();
        }
        let _ = parse_experiment(&lines.join("\n"), Path::new("fuzz.yaml"));
    }
}

/// A missing data file, a missing column and bad split fractions are found once, before any
/// cell runs, with the experiment file and its line; no Rust formatting leaks into the message.
#[test]
fn dataset_problems_are_found_once_before_any_cell() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "y,a,b\n1,x,p\n0,y,q\n1,x,q\n0,z,p\n").unwrap();
    let table = |cats: &str, split: &str, path: &str| {
        format!("name: t\ndataset:\n  kind: table\n  path: {path}\n  format: csv\n  label: y\n  categorical: [{cats}]\n  numeric: []\n  preprocess:\n    split: {split}\nmodel: {{ kind: dlrm, preset: small }}\nmethods:\n  - name: hashing\n  - name: ce\nbudgets: [64, 128]\nseeds: [0, 1, 2]\n")
    };
    let fractions = "{ fractions: { train: 0.8, val: 0.1, test: 0.1 } }";
    let run = |text: String| {
        let f = dir.path().join("t.yaml");
        std::fs::write(&f, text).unwrap();
        let out = cqr(&["sweep", f.to_str().unwrap(), "--results", dir.path().join("r").to_str().unwrap()]);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(table("a, C99", fractions, csv.to_str().unwrap()));
    assert!(
        !ok && err.contains("t.yaml:2: dataset:")
            && err.contains("categorical column `C99` not found")
            && !err.contains("Name(")
            && !err.contains("running"),
        "{err}"
    );
    let (ok, err) = run(table("a, b", fractions, dir.path().join("gone.csv").to_str().unwrap()));
    assert!(
        !ok && err.contains("gone.csv: cannot read file")
            && err.matches("No such file").count() == 1
            && !err.contains("running"),
        "{err}"
    );
    let (ok, err) = run(table("a, b", "{ fractions: { train: 0.8, val: 0.2, test: 0.15 } }", csv.to_str().unwrap()));
    assert!(!ok && err.contains("t.yaml:") && err.contains("sum to 1.15,") && !err.contains("1.1500000"), "{err}");
    let f = dir.path().join("t.yaml");
    std::fs::write(&f, table("a, b", fractions, csv.to_str().unwrap())).unwrap();
    let out = cqr(&["sweep", f.to_str().unwrap(), "--jobs", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--jobs 0") && !err.contains("panicked"), "{err}");
}
