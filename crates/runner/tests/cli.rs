//! The `cqr` binary: subcommands, `data inspect` on the shipped sample, clear errors.

use std::process::Command;

/// The checkout under test: from cargo's run-time `CARGO_MANIFEST_DIR` (a compile-time path goes
/// stale when a target dir shared between checkouts reuses this test's build).
fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run under cargo test")).join("../..")
}

fn cqr(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cqr")).args(args).current_dir(root()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_subcommands() {
    let (ok, out, _) = cqr(&["--help"]);
    assert!(ok);
    for sub in ["data", "sweep", "slurm", "plot", "report", "bench"] {
        assert!(out.contains(sub), "{sub} missing from --help:\n{out}");
    }
}

#[test]
fn bench_ab_prints_a_paired_row_per_case() {
    let (ok, out, err) = cqr(&[
        "bench",
        "--preset",
        "small",
        "--cases",
        "dense-10k,gmf-ml1m",
        "--batch",
        "64",
        "--steps",
        "2",
        "--repeats",
        "2",
        "--ab",
        "precision",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("| case | A: f32 samples/s | B: bf16 samples/s | B/A | 95% interval | rounds |"), "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("| dense-10k |"))
        .expect("a dense-10k row")
        .split('|')
        .map(str::trim)
        .collect();
    let ratio: f64 = row[4].parse().unwrap_or_else(|_| panic!("B/A in {row:?}"));
    assert!(ratio > 0.0 && row[6] == "2", "{row:?}");
    assert!(out.contains("| gmf-ml1m | Precision: GMF has no MLP"), "{out}");
}

#[test]
fn bf16_is_refused_on_burns_graph() {
    // CQR_KERNELS=burn (read once per process, hence a child process): bf16 needs the fused kernels.
    let out = Command::new(env!("CARGO_BIN_EXE_cqr"))
        .args([
            "bench",
            "--preset",
            "small",
            "--cases",
            "dense-10k",
            "--batch",
            "64",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--precision",
            "bf16",
        ])
        .env("CQR_KERNELS", "burn")
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bf16") && err.contains("fused") && !err.contains("panicked"),
        "{err}"
    );
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
    std::fs::write(
        &bad,
        "name: x\ndataset:\n  kind: synthetic_gmf\nmodel: { kind: gmf }\nmethods:\n  - name: nope\nbudgets: [8]\n",
    )
    .unwrap();
    let (ok, _, err) = cqr(&["sweep", bad.to_str().unwrap()]);
    assert!(
        !ok && err.contains("bad.yaml:6") && err.contains("unknown method `nope`") && !err.contains("panicked"),
        "{err}"
    );
    let (ok, _, err) = cqr(&["sweep", bad.to_str().unwrap(), "--shard", "3/2"]);
    assert!(!ok && !err.contains("panicked"), "{err}");
}

/// `cqr slurm`: every array task's command line, run by bash as the job would run it (with
/// `--dry-run` added), parses, and the tasks together hold every cell of the grid exactly once.
#[test]
fn slurm_script_shards_cover_the_grid() {
    let bin = env!("CARGO_BIN_EXE_cqr");
    let (ok, script, err) =
        cqr(&["slurm", "experiments/quick.yaml", "--shards", "3", "--cpus", "2", "--time", "02:30:00", "--cqr", bin]);
    assert!(ok, "{err}");
    assert!(script.contains("#SBATCH --array=0-2") && script.contains("#SBATCH --time=02:30:00\n"), "{script}");
    // The default is hours; a form sbatch reads as minutes is refused.
    let (ok, default, err) = cqr(&["slurm", "experiments/quick.yaml", "--shards", "3"]);
    assert!(ok && default.contains("#SBATCH --time=04:00:00\n"), "{err}{default}");
    let (ok, _, err) = cqr(&["slurm", "experiments/quick.yaml", "--shards", "3", "--time", "24:00"]);
    assert!(!ok && err.contains("four minutes") && !err.contains("panicked"), "{err}");
    let shard_line = script.lines().find(|l| l.contains("--shard \"$SLURM_ARRAY_TASK_ID/")).expect("a shard command");
    let (ok, all, err) = cqr(&["sweep", "experiments/quick.yaml", "--dry-run"]);
    assert!(ok, "{err}");
    let cells = |out: &str| -> Vec<String> { out.lines().filter(|l| l.contains("  ")).map(str::to_string).collect() };
    let mut union = vec![];
    for i in 0..3 {
        let out = Command::new("bash")
            .args(["-c", &format!("{shard_line} --dry-run")])
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "shard {i}: {}", String::from_utf8_lossy(&out.stderr));
        union.extend(cells(&String::from_utf8_lossy(&out.stdout)));
    }
    for line in script.lines().filter(|l| l.contains(" sweep ") && l.contains("--max-cells 0")) {
        let out = Command::new("bash").args(["-c", &format!("{line} --dry-run")]).current_dir(root()).output().unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut want = cells(&all);
    union.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(union, want, "the shards hold every cell exactly once");
    let (ok, _, err) = cqr(&["slurm", "experiments/quick.yaml", "--shards", "0"]);
    assert!(!ok && err.contains("--shards") && !err.contains("panicked"), "{err}");
}
