//! Running cells: dataset loading (cached), training, atomic per-cell results, resume, shards.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use cqr_data::movielens::load_movielens;
use cqr_data::preprocess::file_identity;
use cqr_data::synthetic::{generate_criteo, generate_gmf};
use cqr_data::preprocess::load_tabular_into;
use cqr_data::{load_cached, load_table, CacheOutcome, Dataset, Storage, TabularFormat, TabularSource};
use cqr_methods::least_squares::LeastSquaresTrace;
use cqr_models::{train, EmbeddingSpec, RunResult, TrainConfig};

use crate::config::{Cell, CellConfig, DatasetConfig, Experiment};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CellOutput {
    Train(Box<RunResult>),
    /// The method cannot meet the budget on this data (e.g. QR below 2 sqrt(vocab) rows): a
    /// result, recorded so the sweep neither fails nor retries it.
    Infeasible { reason: String },
    LeastSquares(LeastSquaresTrace),
    /// A tuning trial's loss became non-finite: recorded as the worst trial.
    Diverged { reason: String },
}

/// What is stored for a finished cell (`cells/<id>/record.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub id: String,
    pub name: String,
    /// Name of the loaded dataset (e.g. `synthetic-criteo`, a file name).
    pub dataset: String,
    pub config: CellConfig,
    pub output: CellOutput,
    pub wall_s: f64,
    /// The CPU that trained the cell ([`crate::bench::cpu_model`]); absent in records written
    /// before it was stored. Not compared by `--verify`, which names both when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// The kernels that trained the cell: `fused` (cqr-models' fused ops, the default since
    /// 2026-12-06) or `burn` (burn's op graph, `CQR_KERNELS=burn`); absent in records written
    /// before the fused ops, which the burn graph trained. They round differently in the last
    /// bits, so `--verify` names both when they differ, as it does for the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
}


pub fn cells_dir(results: &Path) -> PathBuf {
    results.join("cells")
}

pub fn record_path(results: &Path, id: &str) -> PathBuf {
    cells_dir(results).join(id).join("record.json")
}

/// Loads every finished cell under `results/cells`, sorted by id.
pub fn load_records(results: &Path) -> Result<Vec<CellRecord>> {
    let dir = cells_dir(results);
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(out) };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // an unfinished write
        }
        let p = e.path().join("record.json");
        if !p.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        out.push(serde_json::from_str(&text).with_context(|| format!("{}: not a cell record", p.display()))?);
    }
    out.sort_by(|a: &CellRecord, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Loads (or generates) the dataset of a cell through the on-disk cache, held as `storage` says.
pub fn load_dataset(cfg: &DatasetConfig, cache: &Path, storage: Storage) -> Result<Dataset> {
    Ok(load_dataset_counted(cfg, cache, storage)?.0)
}

/// [`load_dataset`], also saying whether the cache served it or it was built now.
pub fn load_dataset_counted(cfg: &DatasetConfig, cache: &Path, storage: Storage) -> Result<(Dataset, CacheOutcome)> {
    let key = |extra: Vec<String>| -> Vec<String> {
        let mut k = vec![serde_json::to_string(cfg).expect("config serialises")];
        k.extend(extra);
        k
    };
    let ids = |paths: &[&PathBuf]| paths.iter().map(|p| file_identity(p)).collect::<Result<Vec<_>, _>>();
    Ok(match cfg {
        DatasetConfig::SyntheticCriteo(c) => load_cached(Some(cache), &key(vec![]), storage, |s| s.absorb(generate_criteo(c)?))?,
        DatasetConfig::SyntheticGmf(c) => load_cached(Some(cache), &key(vec![]), storage, |s| s.absorb(generate_gmf(c)?))?,
        DatasetConfig::Criteo(f) | DatasetConfig::Avazu(f) => {
            let format = if matches!(cfg, DatasetConfig::Criteo(_)) { TabularFormat::Criteo } else { TabularFormat::Avazu };
            let train = f.path.to_vec();
            let all: Vec<&PathBuf> = train.iter().chain(f.test_path.as_ref()).collect();
            let src = TabularSource { format, train: train.clone(), test: f.test_path.clone() };
            load_cached(Some(cache), &key(ids(&all)?), storage, |s| load_tabular_into(&src, &f.preprocess, s))?
        }
        DatasetConfig::Movielens(m) => {
            load_cached(Some(cache), &key(ids(&[&m.path])?), storage, |s| s.absorb(load_movielens(&m.path, m.layout, m.bad_rows)?.0))?
        }
        DatasetConfig::Table(t) => {
            let all: Vec<&PathBuf> = [Some(&t.path), t.val_path.as_ref(), t.test_path.as_ref()].into_iter().flatten().collect();
            load_cached(Some(cache), &key(ids(&all)?), storage, |s| load_table(t, s))?
        }
        DatasetConfig::LeastSquares(_) => return Err(anyhow!("least squares cells have no dataset")),
    })
}

/// Out-of-core training (`shuffle: blocks`) memory-maps the cached arrays; otherwise they are read
/// into memory. Results do not depend on it: the row order is the shuffle's, not the storage's.
pub fn storage_for(training: &TrainConfig) -> Storage {
    if training.shuffle.is_full() {
        Storage::Memory
    } else {
        Storage::Mapped
    }
}

/// Runs one cell (no I/O of results).
pub fn run_cell(cell: &Cell, cache: &Path, progress: bool) -> Result<CellRecord> {
    Ok(run_cell_counted(cell, cache, progress)?.0)
}

/// [`run_cell`], also saying whether its dataset was built for it (`Miss`) or came from the cache.
pub fn run_cell_counted(cell: &Cell, cache: &Path, progress: bool) -> Result<(CellRecord, CacheOutcome)> {
    let t0 = Instant::now();
    let c = &cell.config;
    let mut outcome = CacheOutcome::Disabled;
    let (dataset, output) = match &c.dataset {
        DatasetConfig::LeastSquares(ls) => {
            let cfg = cqr_methods::least_squares::LeastSquaresConfig { seed: c.seed, ..*ls };
            ("least-squares".to_string(), CellOutput::LeastSquares(cfg.run()?))
        }
        other => {
            let (ds, o) = load_dataset_counted(other, cache, storage_for(&c.training))?;
            outcome = o;
            // Label: the file name, plus the test file's when there is one (two cells on the same
            // train file but different test files must not be averaged together).
            let label = match other {
                DatasetConfig::Criteo(f) | DatasetConfig::Avazu(f) => match &f.test_path {
                    Some(t) => format!("{}+test:{}", ds.name, t.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
                    None => ds.name.clone(),
                },
                _ => ds.name.clone(),
            };
            let model = c.model.as_ref().ok_or_else(|| anyhow!("cell {} has no model", cell.name))?.resolve_for(ds.n_dense())?;
            let method = c.method.as_ref().ok_or_else(|| anyhow!("cell {} has no method", cell.name))?;
            let spec = EmbeddingSpec { method: method.name.clone(), budget: c.budget.unwrap_or(u64::MAX), options: method.options.clone(), init_scale: method.init_scale, quantize: method.quantize, dense_under_cap: method.dense_under_cap };
            let tc = TrainConfig { seed: c.seed, progress, ..c.training.clone() };
            match train(&ds, &model, &spec, &tc) {
                Ok(r) => (label, CellOutput::Train(Box::new(r))),
                Err(cqr_models::TrainError::Method(e @ cqr_methods::MethodError::Budget { .. })) => (label, CellOutput::Infeasible { reason: e.to_string() }),
                // A tuning trial whose learning rate is too high is a result (the worst), not a
                // failure of the search.
                Err(e @ cqr_models::TrainError::NonFinite { .. }) if c.tuning.is_some() => (label, CellOutput::Diverged { reason: e.to_string() }),
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cell {}", cell.name))),
            }
        }
    };
    Ok((CellRecord { id: cell.id.clone(), name: cell.name.clone(), dataset, config: c.clone(), output, wall_s: t0.elapsed().as_secs_f64(), cpu: Some(crate::bench::cpu_model()), kernels: Some(cqr_models::fused::kernels().to_string()) }, outcome))
}

/// Writes a record atomically: into a hidden temporary directory, then renamed into place, so
/// a killed sweep never leaves a half-written cell that a resume would trust.
pub fn write_record(results: &Path, rec: &CellRecord) -> Result<()> {
    let dir = cells_dir(results);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}-{}", rec.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let cannot = |p: &Path| format!("cannot write {}", p.display());
    std::fs::create_dir_all(&tmp).with_context(|| cannot(&tmp))?;
    let write = |name: &str, text: String| {
        let p = tmp.join(name);
        std::fs::write(&p, text).with_context(|| cannot(&p))
    };
    let written = write("config.json", serde_json::to_string_pretty(&rec.config)?).and_then(|_| write("record.json", serde_json::to_string_pretty(rec)?));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let target = dir.join(&rec.id);
    if target.exists() {
        // Another shard finished the same cell first; keep theirs.
        std::fs::remove_dir_all(&tmp)?;
        return Ok(());
    }
    std::fs::rename(&tmp, &target).with_context(|| format!("moving {} into place", target.display()))
}

#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub results: PathBuf,
    pub cache: PathBuf,
    pub jobs: usize,
    /// (index, count): run cells whose position % count == index.
    pub shard: (usize, usize),
    pub progress: bool,
    /// Stop after this many newly finished cells (for tests of resumption).
    pub max_cells: Option<usize>,
}

#[derive(Debug, Default)]
pub struct SweepReport {
    pub ran: Vec<String>,
    pub already_done: usize,
    pub failed: Vec<(String, String)>,
    /// Datasets this sweep preprocessed or generated (cache misses); the other cells read them
    /// from the cache.
    pub cache_builds: usize,
    /// Cells that ran and were infeasible at their budget (recorded, no model trained).
    pub infeasible: usize,
    /// Cells not started because the disk filled up.
    pub not_started: usize,
}

/// The error (or one it wraps) says the disk or quota is full.
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<cqr_data::DataError>().is_some_and(|d| d.is_disk_full())
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    })
}

pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s.split_once('/').ok_or_else(|| anyhow!("--shard must look like i/n (0-based i), got `{s}`"))?;
    let (i, n): (usize, usize) = (a.trim().parse().map_err(|_| anyhow!("--shard: bad index `{a}`"))?, b.trim().parse().map_err(|_| anyhow!("--shard: bad count `{b}`"))?);
    if n == 0 || i >= n {
        return Err(anyhow!("--shard {s}: need 0 <= i < n"));
    }
    Ok((i, n))
}

/// The cells of shard `(i, n)`: those at positions `p` with `p % n == i`, so `n` shards together
/// hold every cell exactly once.
pub fn shard_cells(exp: &Experiment, shard: (usize, usize)) -> Vec<&Cell> {
    exp.cells.iter().enumerate().filter(|(i, _)| i % shard.1 == shard.0).map(|(_, c)| c).collect()
}

/// Checks every dataset of `cells` once, before any cell runs (files readable, columns
/// present): one error naming the experiment file and its `dataset` line, not one per cell.
pub fn precheck_datasets(exp: &Experiment, cells: &[&Cell]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in cells {
        if seen.insert(serde_json::to_string(&c.config.dataset)?) {
            if let Err(e) = c.config.dataset.precheck() {
                let line = std::fs::read_to_string(&exp.file).ok().and_then(|t| crate::config::line_index(&t).get("dataset").copied());
                let at = line.map(|l| format!(":{l}")).unwrap_or_default();
                return Err(anyhow!("{}{at}: dataset: {e:#}", exp.file.display()));
            }
        }
    }
    Ok(())
}

/// Reads one finished cell's record (`None`: not run yet).
pub fn read_record(results: &Path, id: &str) -> Result<Option<CellRecord>> {
    let p = record_path(results, id);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a cell record", p.display()))?))
}

/// Runs the experiment's cells of this shard that have no record yet (a tuned experiment: its
/// search, then the picks; see [`crate::tune`]).
pub fn sweep(exp: &Experiment, opts: &SweepOptions) -> Result<SweepReport> {
    if let Some(plan) = &exp.tune {
        return crate::tune::run(exp, plan, opts);
    }
    run_cells(exp, shard_cells(exp, opts.shard), opts)
}

/// Runs those of `mine` that have no record yet (at most `max_cells` of them).
pub fn run_cells(exp: &Experiment, mine: Vec<&Cell>, opts: &SweepOptions) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    let mut todo = vec![];
    for c in mine {
        if record_path(&opts.results, &c.id).exists() {
            report.already_done += 1;
        } else {
            todo.push(c);
        }
    }
    if let Some(m) = opts.max_cells {
        todo.truncate(m);
    }
    precheck_datasets(exp, &todo)?;
    let total = todo.len();
    let done = Mutex::new(0usize);
    let report_m = Mutex::new(report);
    // A full disk fails every later cell the same way: stop scheduling at the first one.
    let disk_full = std::sync::atomic::AtomicBool::new(false);
    let run = |c: &&Cell| {
        if disk_full.load(std::sync::atomic::Ordering::SeqCst) {
            report_m.lock().unwrap().not_started += 1;
            return;
        }
        eprintln!("[{}] running {} ({})", exp.name, c.name, c.id);
        match run_cell_counted(c, &opts.cache, opts.progress && opts.jobs == 1).and_then(|(r, o)| write_record(&opts.results, &r).map(|_| (r, o))) {
            Ok((r, outcome)) => {
                if outcome == CacheOutcome::Miss {
                    report_m.lock().unwrap().cache_builds += 1;
                }
                let mut d = done.lock().unwrap();
                *d += 1;
                eprintln!("[{}] {}/{} done: {} in {:.1}s{}", exp.name, *d, total, c.name, r.wall_s, brief(&r));
                report_m.lock().unwrap().ran.push(c.name.clone());
                if matches!(r.output, CellOutput::Infeasible { .. }) {
                    report_m.lock().unwrap().infeasible += 1;
                }
            }
            Err(e) => {
                if is_disk_full(&e) && !disk_full.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    eprintln!("[{}] the disk is full ({e:#}); no further cell is started", exp.name);
                }
                eprintln!("[{}] FAILED {}: {e:#}", exp.name, c.name);
                report_m.lock().unwrap().failed.push((c.name.clone(), format!("{e:#}")));
            }
        }
    };
    if opts.jobs <= 1 {
        todo.iter().for_each(run);
    } else {
        // N cells keep N cores busy: each product runs on its cell's thread (same values).
        cqr_models::fused::set_product_threads(1);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.jobs).build()?;
        pool.install(|| todo.par_iter().for_each(run));
    }
    Ok(report_m.into_inner().unwrap())
}

fn brief(r: &CellRecord) -> String {
    match &r.output {
        CellOutput::Train(t) => {
            let skipped = if t.skipped.skipped > 0 { format!("; {}", t.skipped) } else { String::new() };
            format!(": test BCE {:.5} AUC {:.4}, {} params{skipped}", t.reported.test_bce, t.reported.test_auc, t.total_final.trainable_params)
        }
        CellOutput::LeastSquares(t) => format!(": relative excess {:.2e}", t.final_relative_excess()),
        CellOutput::Infeasible { reason } => format!(": infeasible: {reason}"),
        CellOutput::Diverged { reason } => format!(": diverged: {reason}"),
    }
}

/// Runs `f` holding an exclusive lock on `results/.lock`, so that sweeps writing one results
/// directory (shards started at the same time) write its tables one after the other: the last
/// to take the lock has seen every other process's finished cells.
pub fn with_results_lock<T>(results: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::fs::create_dir_all(results).with_context(|| format!("creating results directory {}", results.display()))?;
    let p = results.join(".lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&p).with_context(|| format!("opening {}", p.display()))?;
    file.lock().with_context(|| format!("locking {}", p.display()))?;
    let out = f();
    let _ = file.unlock();
    out
}

/// Keys of a record that measure the machine, not the model: left out of `--verify`.
const VOLATILE: [&str; 6] = ["timings", "train_samples_per_s", "peak_rss_bytes", "wall_s", "cpu", "kernels"];

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
    let words = |s: &str| s.split(|c: char| c.is_whitespace() || ",;:()[]=".contains(c)).filter(|w| !w.is_empty()).map(str::to_string).collect::<Vec<_>>();
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
            (Ok(p), Ok(q)) if p.is_finite() && q.is_finite() && x.contains(['.', 'e']) => worst = worst.max((p - q).abs() / p.abs().max(q.abs())),
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
        (Some(x), Some(y)) if x.is_finite() && y.is_finite() && !(a.is_i64() || a.is_u64()) => (x - y).abs() / x.abs().max(y.abs()),
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
        _ if a != b => out.push(Difference { path: path.to_string(), stored: a.clone(), now: b.clone(), relative: relative_gap(a, b) }),
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
    let mut done: Vec<&Cell> = exp.every_cell().into_iter().filter(|c| record_path(&opts.results, &c.id).exists()).collect();
    if done.is_empty() {
        return Err(anyhow!("--verify: no finished cell of {} under {} (run the sweep first)", exp.name, opts.results.display()));
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
        let stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?).with_context(|| format!("{}: not a cell record", p.display()))?;
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
        json_diff(&stored, &json!({"cpu": "AMD EPYC (family 25, model 17, AVX-512)", "kernels": "fused", "wall_s": 9.0, "output": {"reported": {"test_bce": 0.5}}}), "", &mut out);
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
        assert_eq!(v(record(here, base, 10), record(here, tiny, 10)).verdict(tol), Verdict::Different, "same CPU: bits");
        assert_eq!(v(record(there, base, 10), record(here, base * (1.0 + 1e-4), 10)).verdict(tol), Verdict::Different, "a real change");
        assert_eq!(v(record(there, base, 10), record(here, base, 11)).verdict(tol), Verdict::Different, "integers exactly");
        // A record that names no CPU is treated as another machine's.
        let mut old = record(here, base, 10);
        old.as_object_mut().unwrap().remove("cpu");
        assert!(matches!(v(old, record(here, tiny, 10)).verdict(tol), Verdict::WithinTolerance { .. }));
        // Numbers inside a log line get the tolerance; its words do not.
        assert!(text_gap("pq: 4 chunks, largest change 1.000000000e-3", "pq: 4 chunks, largest change 1.000000001e-3") < 1e-8);
        assert_eq!(text_gap("pq: 4 chunks", "pq: 5 chunks"), f64::INFINITY, "integers exactly");
        assert_eq!(text_gap("clustered 3", "reset 3"), f64::INFINITY);
    }

    #[test]
    fn the_cpu_is_named_with_family_model_and_simd() {
        let c = crate::bench::cpu_model();
        assert!(c.contains("AVX-512"), "{c}");
        if std::path::Path::new("/proc/cpuinfo").exists() && std::fs::read_to_string("/proc/cpuinfo").unwrap().contains("cpu family") {
            assert!(c.contains("family") && c.contains("model"), "{c}");
        }
    }
}
