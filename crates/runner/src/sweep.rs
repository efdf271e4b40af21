//! Running a grid: which cells are this process's (shards), checks before any cell runs,
//! scheduling them (`--jobs`), resume (finished cells are skipped), the summary tables after.
//! One cell's run is in `cell.rs`, the record store in `record.rs`, `--verify` in `verify.rs`.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, Result};

use cqr_data::CacheOutcome;

use crate::config::{Cell, Experiment};

pub use crate::cell::*;
pub use crate::record::*;
pub use crate::verify::*;

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
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    })
}

pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s.split_once('/').ok_or_else(|| anyhow!("--shard must look like i/n (0-based i), got `{s}`"))?;
    let (i, n): (usize, usize) = (
        a.trim().parse().map_err(|_| anyhow!("--shard: bad index `{a}`"))?,
        b.trim().parse().map_err(|_| anyhow!("--shard: bad count `{b}`"))?,
    );
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
                let line = std::fs::read_to_string(&exp.file)
                    .ok()
                    .and_then(|t| crate::config::line_index(&t).get("dataset").copied());
                let at = line.map(|l| format!(":{l}")).unwrap_or_default();
                return Err(anyhow!("{}{at}: dataset: {e:#}", exp.file.display()));
            }
        }
    }
    Ok(())
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
        match run_cell_counted(c, &opts.cache, opts.progress && opts.jobs == 1)
            .and_then(|(r, o)| write_record(&opts.results, &r).map(|_| (r, o)))
        {
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
        // N cells keep N cores busy: each cell runs its loops on its own thread (same values).
        cqr_models::threads::set_cell_threads(1);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.jobs).build()?;
        pool.install(|| in_order_on(opts.jobs, &todo, run));
    }
    Ok(report_m.into_inner().unwrap())
}

/// `run(item)` for every item on `jobs` workers of the current rayon pool, each taking the next
/// item as soon as it is free, so items start in order and no worker idles while one is left.
/// (A `par_iter` hands each worker a run of neighbouring items that nobody else can take: at the
/// end of a grid one core sat idle while the other finished a queue of long cells.)
fn in_order_on<T: Sync>(jobs: usize, items: &[T], run: impl Fn(&T) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    rayon::scope(|s| {
        for _ in 0..jobs.min(items.len()) {
            s.spawn(|_| {
                while let Some(item) = items.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
                    run(item);
                }
            });
        }
    });
}

fn brief(r: &CellRecord) -> String {
    match &r.output {
        CellOutput::Train(t) => {
            let skipped = if t.skipped.skipped > 0 { format!("; {}", t.skipped) } else { String::new() };
            if r.config.tuning.is_some() {
                // A tuning run shows what selection reads, never a test metric.
                let params = t.total_final.trainable_params;
                return format!(
                    ": val BCE {:.5} AUC {:.4}, {params} params{skipped}",
                    t.reported.val_bce,
                    t.best_val_auc()
                );
            }
            format!(
                ": test BCE {:.5} AUC {:.4}, {} params{skipped}",
                t.reported.test_bce, t.reported.test_auc, t.total_final.trainable_params
            )
        }
        CellOutput::LeastSquares(t) => format!(": relative excess {:.2e}", t.final_relative_excess()),
        CellOutput::Infeasible { reason } => format!(": infeasible: {reason}"),
        CellOutput::Diverged { reason } => format!(": diverged: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_start_in_order_each_once_and_never_more_than_jobs_at_once() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let items: Vec<usize> = (0..40).collect();
        let (starts, running, most) = (Mutex::new(vec![]), std::sync::atomic::AtomicUsize::new(0), Mutex::new(0));
        pool.install(|| {
            in_order_on(2, &items, |&i| {
                let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let mut m = most.lock().unwrap();
                *m = (*m).max(now);
                drop(m);
                starts.lock().unwrap().push(i);
                // Uneven work: early items are the long ones, as a grid's CQR cells can be.
                (0..(40 - i) * 20_000).fold(0u64, |a, k| a.wrapping_add(std::hint::black_box(k as u64)));
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            })
        });
        let starts = starts.into_inner().unwrap();
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, items, "every item once");
        // In order up to the two workers' race to record their start (a par_iter would start
        // the second worker at item 20).
        assert!(starts.iter().enumerate().all(|(pos, &i)| pos.abs_diff(i) < 2), "{starts:?}");
        assert!(*most.lock().unwrap() <= 2);
    }
}
