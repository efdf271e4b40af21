//! `cqr sweep --verify`: re-train finished cells and compare them with their stored records,
//! bit for bit on the same CPU model, within a relative tolerance on another.

use anyhow::{anyhow, Context, Result};

use crate::cell::run_cell;
use crate::config::{Cell, Experiment};
use crate::record::record_path;
use crate::sweep::{precheck_datasets, SweepOptions};

/// Keys of a record that measure the machine, not the model: left out of `--verify`.
const VOLATILE: [&str; 7] = ["timings", "train_samples_per_s", "peak_rss_bytes", "wall_s", "cpu", "kernels", "serving"];

/// How `--verify` compares numbers. `Exact`: every value bit for bit (floats round-trip exactly
/// through the JSON records). `Relative(tol)`: two numbers agree when
/// `|a - b| <= tol * max(|a|, |b|)` (integers and every non-number still exactly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Exact,
    Relative(f64),
}

/// The relative tolerance `--verify` allows a record trained on another CPU model (or with the
/// other kernels). Measured (docs/performance.md, "Verify tolerance"): a change of summation
/// order moves a run's first evaluations by 1e-8 to 1e-7 relative (the 19 Terabyte-sample cells
/// of the quick grid under the other kernels: at most 1.1e-7 where no discrete decision flipped;
/// AVX-512 records re-run on AVX2, 2026-12-02: 5.7e-9 on test BCE). The seed-to-seed spread of
/// test BCE is 2.5e-3 to 4.6e-3 relative (median sd over the criteo-regime and regime-map cells;
/// the smallest 1.4e-4), so 1e-6 sits an order above rounding and over two below any seed
/// spread measured: a regression of 1e-4 fails. Training can amplify rounding (a k-means assignment or a
/// best epoch that flips; long runs: up to 5.5e-4 on the planted quick cells): `--verify` names
/// such a cell as different, and `--tolerance` loosens the bound knowingly.
pub const CROSS_CPU_TOLERANCE: f64 = 1e-6;

/// One metric where two records differ: its path, both values and (numbers) the relative gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub path: String,
    pub stored: serde_json::Value,
    pub now: serde_json::Value,
    /// `|a - b| / max(|a|, |b|)` for two numbers, else infinite.
    pub relative: f64,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: stored {}, now {}", self.path, self.stored, self.now)?;
        if self.relative.is_finite() {
            write!(f, " (relative {:.1e})", self.relative)?;
        }
        Ok(())
    }
}

/// The largest relative gap between the numbers of two texts that are otherwise the same
/// (hook logs: `pq: 4 chunks, largest change 1.2e-3`); infinite when the words differ.
fn text_gap(a: &str, b: &str) -> f64 {
    let words = |s: &str| {
        s.split(|c: char| c.is_whitespace() || ",;:()[]=".contains(c))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (wa, wb) = (words(a), words(b));
    if wa.len() != wb.len() {
        return f64::INFINITY;
    }
    let mut worst: f64 = 0.0;
    for (x, y) in wa.iter().zip(&wb) {
        if x == y {
            continue;
        }
        match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) if p.is_finite() && q.is_finite() && x.contains(['.', 'e']) => {
                worst = worst.max((p - q).abs() / p.abs().max(q.abs()))
            }
            _ => return f64::INFINITY,
        }
    }
    worst
}

fn relative_gap(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return text_gap(x, y);
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if x == y => 0.0,
        (Some(x), Some(y)) if x.is_finite() && y.is_finite() && !(a.is_i64() || a.is_u64()) => {
            (x - y).abs() / x.abs().max(y.abs())
        }
        _ => f64::INFINITY,
    }
}

/// Paths (`a.b[3].c`) where two JSON values differ, ignoring [`VOLATILE`] keys. Every
/// difference is listed, with its relative gap; the tolerance is applied by the caller.
fn json_diff(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<Difference>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            // Keys absent from the stored record (`x`) were added to the format after it was
            // written: not compared. Keys the new run lacks are differences.
            for k in x.keys() {
                if VOLATILE.contains(&k.as_str()) {
                    continue;
                }
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                json_diff(va, vb, &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_diff(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(Difference {
            path: path.to_string(),
            stored: a.clone(),
            now: b.clone(),
            relative: relative_gap(a, b),
        }),
        _ => {}
    }
}

/// The verdict on one re-run cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every metric bit for bit.
    Identical,
    /// Differences, all within the tolerance allowed because the record came from another CPU
    /// model or other kernels; the largest relative one.
    WithinTolerance { largest: f64 },
    /// At least one difference beyond what is allowed.
    Different,
}

impl Verified {
    /// Exact on the record's own CPU and kernels (or with `--exact`); within `tol` when the
    /// record was trained on another CPU model, an unrecorded one, or with the other kernels.
    pub fn verdict(&self, tol: Tolerance) -> Verdict {
        if self.differences.is_empty() {
            return Verdict::Identical;
        }
        let largest = self.differences.iter().map(|d| d.relative).fold(0.0, f64::max);
        match tol {
            Tolerance::Relative(t) if self.other_machine() && largest <= t => Verdict::WithinTolerance { largest },
            _ => Verdict::Different,
        }
    }

    /// The stored record came from another CPU model (or names none) or other kernels.
    pub fn other_machine(&self) -> bool {
        self.stored_cpu.is_none() || self.stored_cpu != self.cpu || self.stored_kernels != self.kernels
    }
}

/// One re-run cell of `--verify`.
#[derive(Debug)]
pub struct Verified {
    pub name: String,
    pub wall_s: f64,
    /// Every metric that differs from the stored record (empty: identical, bit for bit).
    pub differences: Vec<Difference>,
    /// The CPU of the stored record (if it has one) and of this run.
    pub stored_cpu: Option<String>,
    pub cpu: Option<String>,
    /// The kernels of the stored record (`burn` when it predates the field) and of this run.
    pub stored_kernels: String,
    pub kernels: String,
}

/// A stored record against a new run of its cell (both as the JSON a record is written as).
pub fn compare_records(name: &str, stored: &serde_json::Value, now: &serde_json::Value, wall_s: f64) -> Verified {
    let mut differences = vec![];
    json_diff(stored, now, "", &mut differences);
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Verified {
        name: name.to_string(),
        wall_s,
        differences,
        stored_cpu: text(stored, "cpu"),
        cpu: text(now, "cpu"),
        stored_kernels: text(stored, "kernels").unwrap_or_else(|| "burn".into()),
        kernels: text(now, "kernels").unwrap_or_default(),
    }
}

/// Re-runs `n` finished cells, chosen by `seed`, and compares every stored metric with the new
/// run (floats round-trip exactly through the JSON records); [`Verified::verdict`] judges it.
pub fn verify(exp: &Experiment, opts: &SweepOptions, n: usize, seed: u64) -> Result<Vec<Verified>> {
    use rand::{Rng, SeedableRng};
    let mut done: Vec<&Cell> =
        exp.every_cell().into_iter().filter(|c| record_path(&opts.results, &c.id).exists()).collect();
    if done.is_empty() {
        return Err(anyhow!(
            "--verify: no finished cell of {} under {} (run the sweep first)",
            exp.name,
            opts.results.display()
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for i in (1..done.len()).rev() {
        done.swap(i, rng.random_range(0..=i));
    }
    done.truncate(n);
    precheck_datasets(exp, &done)?;
    let mut out = vec![];
    for c in done {
        let p = record_path(&opts.results, &c.id);
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| format!("{}: not a cell record", p.display()))?;
        eprintln!("[{}] verifying {} ({})", exp.name, c.name, c.id);
        let rec = run_cell(c, &opts.cache, false)?;
        // Through text, as stored: f32 fields are written in their shortest f32 form.
        let now: serde_json::Value = serde_json::from_str(&serde_json::to_string_pretty(&rec)?)?;
        out.push(compare_records(&c.name, &stored, &now, rec.wall_s));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verify_compares_metrics_not_the_machine() {
        let stored = json!({"cpu": "Intel Xeon (family 6, model 207, AVX-512)", "kernels": "burn", "wall_s": 3.0, "output": {"reported": {"test_bce": 0.5}}});
        let mut out = vec![];
        json_diff(
            &stored,
            &json!({"cpu": "AMD EPYC (family 25, model 17, AVX-512)", "kernels": "fused", "wall_s": 9.0, "output": {"reported": {"test_bce": 0.5}}}),
            "",
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        json_diff(&stored, &json!({"output": {"reported": {"test_bce": 0.50000001}}}), "", &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].path == ".output.reported.test_bce", "{out:?}");
    }

    fn record(cpu: &str, bce: f64, steps: u64) -> serde_json::Value {
        json!({"cpu": cpu, "kernels": "fused", "output": {"reported": {"test_bce": bce}, "steps": steps}})
    }

    /// Same CPU: the bits. Another CPU: within the tolerance, and only there. `--exact`
    /// (Tolerance::Exact): the bits everywhere. Integers never get a tolerance.
    #[test]
    fn verify_allows_rounding_on_another_cpu_only() {
        let (here, there) = ("AMD EPYC (family 25, model 1, no AVX-512)", "Intel Xeon (family 6, model 207, AVX-512)");
        let tol = Tolerance::Relative(CROSS_CPU_TOLERANCE);
        let v = |stored: serde_json::Value, now: serde_json::Value| compare_records("c", &stored, &now, 1.0);
        let base = 0.3865292262;
        assert_eq!(v(record(here, base, 10), record(here, base, 10)).verdict(tol), Verdict::Identical);
        let tiny = base * (1.0 + 1e-9);
        let other = v(record(there, base, 10), record(here, tiny, 10));
        match other.verdict(tol) {
            Verdict::WithinTolerance { largest } => assert!((largest - 1e-9).abs() < 1e-10, "{largest}"),
            x => panic!("{x:?}"),
        }
        assert_eq!(other.verdict(Tolerance::Exact), Verdict::Different, "--exact demands the bits");
        assert_eq!(
            v(record(here, base, 10), record(here, tiny, 10)).verdict(tol),
            Verdict::Different,
            "same CPU: bits"
        );
        assert_eq!(
            v(record(there, base, 10), record(here, base * (1.0 + 1e-4), 10)).verdict(tol),
            Verdict::Different,
            "a real change"
        );
        assert_eq!(
            v(record(there, base, 10), record(here, base, 11)).verdict(tol),
            Verdict::Different,
            "integers exactly"
        );
        // A record that names no CPU is treated as another machine's.
        let mut old = record(here, base, 10);
        old.as_object_mut().unwrap().remove("cpu");
        assert!(matches!(v(old, record(here, tiny, 10)).verdict(tol), Verdict::WithinTolerance { .. }));
        // Numbers inside a log line get the tolerance; its words do not.
        assert!(
            text_gap("pq: 4 chunks, largest change 1.000000000e-3", "pq: 4 chunks, largest change 1.000000001e-3")
                < 1e-8
        );
        assert_eq!(text_gap("pq: 4 chunks", "pq: 5 chunks"), f64::INFINITY, "integers exactly");
        assert_eq!(text_gap("clustered 3", "reset 3"), f64::INFINITY);
    }

    #[test]
    fn the_cpu_is_named_with_family_model_and_simd() {
        let c = crate::bench::cpu_model();
        assert!(c.contains("AVX-512"), "{c}");
        if std::path::Path::new("/proc/cpuinfo").exists()
            && std::fs::read_to_string("/proc/cpuinfo").unwrap().contains("cpu family")
        {
            assert!(c.contains("family") && c.contains("model"), "{c}");
        }
    }
}
