//! The record store: one `cells/ID/record.json` per finished cell, written atomically, read back
//! for resume, tables and verify; a lock file orders processes that share a results directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use cqr_methods::least_squares::LeastSquaresTrace;
use cqr_models::RunResult;

use crate::config::CellConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CellOutput {
    Train(Box<RunResult>),
    /// The method cannot meet the budget on this data (e.g. QR below 2 sqrt(vocab) rows): a
    /// result, recorded so the sweep neither fails nor retries it.
    Infeasible {
        reason: String,
    },
    LeastSquares(LeastSquaresTrace),
    /// A tuning trial's loss became non-finite: recorded as the worst trial.
    Diverged {
        reason: String,
    },
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
    let written = write("config.json", serde_json::to_string_pretty(&rec.config)?)
        .and_then(|_| write("record.json", serde_json::to_string_pretty(rec)?));
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

/// Reads one finished cell's record (`None`: not run yet).
pub fn read_record(results: &Path, id: &str) -> Result<Option<CellRecord>> {
    let p = record_path(results, id);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a cell record", p.display()))?))
}

/// Runs `f` holding an exclusive lock on `results/.lock`, so that sweeps writing one results
/// directory (shards started at the same time) write its tables one after the other: the last
/// to take the lock has seen every other process's finished cells.
pub fn with_results_lock<T>(results: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::fs::create_dir_all(results).with_context(|| format!("creating results directory {}", results.display()))?;
    let p = results.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    file.lock().with_context(|| format!("locking {}", p.display()))?;
    let out = f();
    let _ = file.unlock();
    out
}
