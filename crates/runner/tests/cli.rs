//! The `cqr` binary: subcommands, `data inspect` on the shipped sample, clear errors.

use std::process::Command;

fn cqr(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cqr")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn help_lists_subcommands() {
    let (ok, out, _) = cqr(&["--help"]);
    assert!(ok);
    for sub in ["data", "sweep", "plot", "report", "bench"] {
        assert!(out.contains(sub), "{sub} missing from --help:\n{out}");
    }
}

#[test]
fn inspect_prints_the_sample_rows() {
    let (ok, out, err) = cqr(&["data", "inspect", "datasets/criteo/terabyte_day0_sample8k.tsv"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "rows: 8324"), "{out}");
    assert!(out.contains("label rate: 0.0332"), "{out}");
}

#[test]
fn errors_are_clear_and_exit_nonzero() {
    let (ok, _, err) = cqr(&["data", "inspect", "no/such/file.tsv"]);
    assert!(!ok && err.contains("no/such/file.tsv") && !err.contains("panicked"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: x\ndataset:\n  kind: synthetic_gmf\nmodel: { kind: gmf }\nmethods:\n  - name: nope\nbudgets: [8]\n").unwrap();
    let (ok, _, err) = cqr(&["sweep", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("bad.yaml:6") && err.contains("unknown method `nope`") && !err.contains("panicked"), "{err}");
    let (ok, _, err) = cqr(&["sweep", bad.to_str().unwrap(), "--shard", "3/2"]);
    assert!(!ok && !err.contains("panicked"), "{err}");
}
