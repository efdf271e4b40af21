//! Running a `tune:` section: every method × budget at its own setting, chosen on validation.
//!
//! The protocol (BARS/FuxiCTR's, with an equal trial budget and no test metric in sight):
//! 1. every group (method entry × grid point × budget) gets the same trials
//!    ([`crate::config::tune`]); each trial runs on the tuning seeds, which the final seeds never
//!    include;
//! 2. with `halving`, the trials first run partial prefixes of their schedule (rungs at
//!    `min_fraction · eta^k` of the steps); at each rung a group keeps its best `⌈n/eta⌉` by the
//!    selection metric averaged over the tuning seeds; the rest stop;
//! 3. the survivors run in full; the pick is the best mean validation metric (ties: the earlier
//!    trial; a diverged run is the worst);
//! 4. the pick runs on the experiment's `seeds`: these final cells are the summary's cells, paired
//!    by seed as in any grid.
//!
//! Halving compares trials of one method at the same fraction of one schedule, so a CQR
//! cluster step (whose validation jumps) falls at the same point for every trial it compares;
//! and a rung's score is the best evaluation so far, not the last, so a trial caught just after
//! a cluster step is not judged by its dip. It is unsafe when the space holds keys that move the
//! schedule (epochs, CQR's `last_cluster`): trials then sit at different phases at one rung.
//!
//! Everything here is decided from the stored records, so a killed search resumes to the same
//! picks and tables. `tuning.parquet`/`.csv` holds every trial run, `picks.parquet`/`.csv` the pick
//! of each group.

use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::*;

use crate::config::tune::{value_text, SelectKey, Setting};
use crate::config::{Cell, Experiment, TuneGroup, TunePlan};
use crate::paired::t_interval;
use crate::sweep::{read_record, run_cells, CellOutput, CellRecord, SweepOptions, SweepReport};

/// The selection metric of a finished run (NaN: diverged or no model).
pub fn metric(rec: &CellRecord, key: SelectKey) -> f64 {
    match &rec.output {
        CellOutput::Train(t) => match key {
            SelectKey::ValBce => t.reported.val_bce,
            SelectKey::ValAuc => t.best_val_auc(),
        },
        _ => f64::NAN,
    }
}

/// The per-seed metrics of `cells` (NaN where not run yet or diverged).
fn scores(cells: &[Cell], results: &Path, key: SelectKey) -> Result<Vec<f64>> {
    cells.iter().map(|c| Ok(read_record(results, &c.id)?.map(|r| metric(&r, key)).unwrap_or(f64::NAN))).collect()
}

/// Mean over seeds; NaN (the worst) when any seed diverged.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Indices of `alive` ordered best first by `means` (ties: the earlier trial).
pub fn ranked(alive: &[usize], means: &[f64], key: SelectKey) -> Vec<usize> {
    let mut order = alive.to_vec();
    order.sort_by(|&a, &b| {
        if key.better(means[a], means[b]) {
            std::cmp::Ordering::Less
        } else if key.better(means[b], means[a]) {
            std::cmp::Ordering::Greater
        } else {
            a.cmp(&b)
        }
    });
    order
}

/// Whether `cell` has a record in `results`.
fn finished(cell: &Cell, results: &Path) -> bool {
    crate::sweep::record_path(results, &cell.id).exists()
}

/// Runs `cells` (this shard's share of them); `false` when the stage is not complete afterwards
/// (other shards' cells, `--max-cells`, failures): the next stage cannot be decided yet.
fn run_stage(
    exp: &Experiment,
    stage: &str,
    cells: Vec<&Cell>,
    opts: &mut SweepOptions,
    total: &mut SweepReport,
) -> Result<bool> {
    let mine: Vec<&Cell> =
        cells.iter().enumerate().filter(|(i, _)| i % opts.shard.1 == opts.shard.0).map(|(_, c)| *c).collect();
    let rep = run_cells(exp, mine, opts)?;
    if let Some(m) = opts.max_cells.as_mut() {
        *m = m.saturating_sub(rep.ran.len() + rep.failed.len());
    }
    total.ran.extend(rep.ran);
    total.already_done += rep.already_done;
    total.failed.extend(rep.failed);
    total.cache_builds += rep.cache_builds;
    total.infeasible += rep.infeasible;
    total.not_started += rep.not_started;
    let missing = cells.iter().filter(|c| !finished(c, &opts.results)).count();
    if missing > 0 {
        eprintln!(
            "[{}] tuning: {stage}: {missing} of {} cells not finished yet; run the sweep again to go on",
            exp.name,
            cells.len()
        );
    }
    Ok(missing == 0)
}

/// Runs the search and the picks; writes the tuning tables whatever was reached. Each group
/// (method × budget) moves on by itself: a group whose rung is finished is narrowed, runs its
/// full runs and its pick's final seeds even while another group's rung is still running (other
/// shards, `--max-cells`, a killed sweep), so a finished group's pick is in the tables. The
/// cells, and so the picks, are the same whatever order they ran in.
pub fn run(exp: &Experiment, plan: &TunePlan, opts: &SweepOptions) -> Result<SweepReport> {
    crate::sweep::precheck_datasets(exp, &exp.every_cell())?;
    let mut opts = opts.clone();
    let mut total = SweepReport::default();
    let key = plan.spec.select;
    let mut alive: Vec<Vec<usize>> = plan.groups.iter().map(|g| (0..g.trials.len()).collect()).collect();
    let rungs = plan.spec.halving.map(|h| h.rungs()).unwrap_or_default();
    let eta = plan.spec.halving.map(|h| h.eta).unwrap_or(1);
    // How many stages each group has finished: rungs, then its full runs.
    let mut reached = vec![0usize; plan.groups.len()];
    let done = |cells: &[&Cell], results: &Path| cells.iter().all(|c| finished(c, results));
    for (r, f) in rungs.iter().enumerate() {
        let of_group = |g: usize, alive: &[Vec<usize>]| -> Vec<&Cell> {
            alive[g].iter().flat_map(|&t| plan.groups[g].trials[t].rungs[r].iter()).collect()
        };
        let ready: Vec<usize> = (0..plan.groups.len()).filter(|&g| reached[g] == r).collect();
        let cells: Vec<&Cell> = ready.iter().flat_map(|&g| of_group(g, &alive)).collect();
        run_stage(exp, &format!("rung {} ({f} of the steps)", r + 1), cells, &mut opts, &mut total)?;
        for g in ready {
            if !done(&of_group(g, &alive), &opts.results) {
                continue;
            }
            let means = plan.groups[g]
                .trials
                .iter()
                .map(|t| Ok(mean(&scores(&t.rungs[r], &opts.results, key)?)))
                .collect::<Result<Vec<f64>>>()?;
            let keep = alive[g].len().div_ceil(eta).max(1);
            alive[g] = ranked(&alive[g], &means, key).into_iter().take(keep).collect();
            alive[g].sort();
            reached[g] = r + 1;
        }
    }
    let full_of = |g: usize, alive: &[Vec<usize>]| -> Vec<&Cell> {
        alive[g].iter().flat_map(|&t| plan.groups[g].trials[t].full.iter()).collect()
    };
    let ready: Vec<usize> = (0..plan.groups.len()).filter(|&g| reached[g] == rungs.len()).collect();
    run_stage(exp, "full runs", ready.iter().flat_map(|&g| full_of(g, &alive)).collect(), &mut opts, &mut total)?;
    let finished: Vec<usize> = ready.into_iter().filter(|&g| done(&full_of(g, &alive), &opts.results)).collect();
    let mut cells: Vec<&Cell> = vec![];
    for &g in &finished {
        let pick = pick_group(&plan.groups[g], &alive[g], &opts.results, key)?;
        cells.extend(plan.groups[g].trials[pick.trial].finals.iter());
    }
    run_stage(exp, "the picks on the final seeds", cells, &mut opts, &mut total)?;
    write_tuning_tables(plan, &alive, &opts.results)?;
    Ok(total)
}

/// The pick of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub trial: usize,
    /// Mean and sample sd of the selection metric over the tuning seeds.
    pub mean: f64,
    pub sd: f64,
    /// The runner-up (trial, mean), if any trial ran in full besides the pick.
    pub runner_up: Option<(usize, f64)>,
    /// Tuning seeds whose own best full-run trial is the pick, of all tuning seeds.
    pub agreement: (usize, usize),
    /// Tuned keys whose picked value is the smallest or largest tried: the space may be too narrow.
    pub edges: Vec<String>,
}

/// One group's pick from its full runs.
fn pick_group(g: &TuneGroup, alive: &[usize], results: &Path, key: SelectKey) -> Result<Pick> {
    let per_seed = g.trials.iter().map(|t| scores(&t.full, results, key)).collect::<Result<Vec<_>>>()?;
    Ok(pick_of(g, alive, &per_seed, key))
}

/// The pick from the full runs' per-seed metrics (`per_seed[trial][seed]`; trials outside
/// `alive` are ignored).
pub fn pick_of(g: &TuneGroup, alive: &[usize], per_seed: &[Vec<f64>], key: SelectKey) -> Pick {
    let means: Vec<f64> = per_seed.iter().map(|s| mean(s)).collect();
    let order = ranked(alive, &means, key);
    let best = order[0];
    let n_seeds = per_seed[best].len();
    let agree = (0..n_seeds)
        .filter(|&s| ranked(alive, &per_seed.iter().map(|x| x[s]).collect::<Vec<_>>(), key)[0] == best)
        .count();
    let sd = if n_seeds > 1 { t_interval(&per_seed[best]).sd } else { f64::NAN };
    Pick {
        trial: best,
        mean: means[best],
        sd,
        runner_up: order.get(1).map(|&t| (t, means[t])),
        agreement: (agree, n_seeds),
        edges: edges(&g.trials.iter().map(|t| &t.setting).collect::<Vec<_>>(), best),
    }
}

/// Numeric keys whose value in trial `pick` is the smallest or largest of all trials'.
pub fn edges(settings: &[&Setting], pick: usize) -> Vec<String> {
    let mut out = vec![];
    for (i, (k, v)) in settings[pick].iter().enumerate() {
        let Some(x) = v.as_f64() else { continue };
        let all: Vec<f64> = settings.iter().filter_map(|s| s.get(i).and_then(|kv| kv.1.as_f64())).collect();
        let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
        if lo < hi && (x == lo || x == hi) {
            let short = k.rsplit('.').next().unwrap_or(k);
            out.push(format!(
                "{short}={} ({})",
                value_text(v),
                if x == lo { "smallest tried" } else { "largest tried" }
            ));
        }
    }
    out
}

fn col_s(name: &str, v: Vec<String>) -> Column {
    Column::new(name.into(), v)
}
fn col_f(name: &str, v: Vec<f64>) -> Column {
    Column::new(name.into(), v)
}
fn col_u(name: &str, v: Vec<u64>) -> Column {
    Column::new(name.into(), v)
}

fn write_frame(results: &Path, stem: &str, mut df: DataFrame) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(results)?;
    let pq = results.join(format!("{stem}.parquet"));
    ParquetWriter::new(std::fs::File::create(&pq).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", pq.display()))?)
        .finish(&mut df)?;
    let csv = results.join(format!("{stem}.csv"));
    CsvWriter::new(std::fs::File::create(&csv).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", csv.display()))?)
        .finish(&mut df)?;
    Ok(vec![pq, csv])
}

/// The tuned keys, by their last path segment, in the space's order.
fn key_names(plan: &TunePlan) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![];
    for g in &plan.groups {
        for (k, _) in g.trials.first().map(|t| t.setting.as_slice()).unwrap_or(&[]) {
            if !out.iter().any(|(full, _)| full == k) {
                out.push((k.clone(), k.rsplit('.').next().unwrap_or(k).to_string()));
            }
        }
    }
    out
}

/// `tuning.*`: one row per trial run that finished (rungs and full runs, every tuning seed);
/// `picks.*`: one row per group whose full runs all finished.
pub fn write_tuning_tables(plan: &TunePlan, alive: &[Vec<usize>], results: &Path) -> Result<()> {
    let key = plan.spec.select;
    let names = key_names(plan);
    let mut rows: Vec<(String, String, u64, usize, String, f64, u64, f64, f64, String)> = vec![];
    for g in &plan.groups {
        for (t, trial) in g.trials.iter().enumerate() {
            let stages = trial
                .rungs
                .iter()
                .zip(plan.spec.halving.map(|h| h.rungs()).unwrap_or_default())
                .chain(std::iter::once((&trial.full, 1.0)));
            for (cells, f) in stages {
                for c in cells {
                    let Some(rec) = read_record(results, &c.id)? else { continue };
                    let (vb, va) = match &rec.output {
                        CellOutput::Train(r) => (r.reported.val_bce, r.best_val_auc()),
                        _ => (f64::NAN, f64::NAN),
                    };
                    let status = match &rec.output {
                        CellOutput::Diverged { .. } => "diverged",
                        CellOutput::Infeasible { .. } => "infeasible",
                        _ => "ok",
                    };
                    rows.push((
                        rec.dataset.clone(),
                        g.line.clone(),
                        g.budget.unwrap_or(0),
                        t,
                        crate::config::tune::setting_label(&trial.setting),
                        f,
                        c.config.seed,
                        vb,
                        va,
                        status.into(),
                    ));
                }
            }
        }
    }
    let value_of = |line: &str, t: usize, k: &str| -> String {
        plan.groups
            .iter()
            .find(|g| g.line == line)
            .and_then(|g| g.trials[t].setting.iter().find(|(kk, _)| kk == k))
            .map(|(_, v)| value_text(v))
            .unwrap_or_default()
    };
    let mut cols = vec![
        col_s("dataset", rows.iter().map(|r| r.0.clone()).collect()),
        col_s("line", rows.iter().map(|r| r.1.clone()).collect()),
        col_s("method", rows.iter().map(|r| r.1.split('-').next().unwrap_or_default().to_string()).collect()),
        col_u("budget", rows.iter().map(|r| r.2).collect()),
        col_u("trial", rows.iter().map(|r| r.3 as u64).collect()),
        col_s("setting", rows.iter().map(|r| r.4.clone()).collect()),
    ];
    for (full, short) in &names {
        cols.push(col_s(short, rows.iter().map(|r| value_of(&r.1, r.3, full)).collect()));
    }
    cols.extend([
        col_f("fraction", rows.iter().map(|r| r.5).collect()),
        col_u("tuning_seed", rows.iter().map(|r| r.6).collect()),
        col_f("val_bce", rows.iter().map(|r| r.7).collect()),
        col_f("val_auc", rows.iter().map(|r| r.8).collect()),
        col_s("status", rows.iter().map(|r| r.9.clone()).collect()),
    ]);
    write_frame(results, "tuning", DataFrame::new(rows.len(), cols)?)?;
    write_picks(plan, alive, results, key, &names)
}

fn write_picks(
    plan: &TunePlan,
    alive: &[Vec<usize>],
    results: &Path,
    key: SelectKey,
    names: &[(String, String)],
) -> Result<()> {
    let mut rows: Vec<(&TuneGroup, Pick, usize)> = vec![];
    for (g, a) in plan.groups.iter().zip(alive) {
        let done = a.iter().all(|&t| g.trials[t].full.iter().all(|c| finished(c, results)));
        if done {
            rows.push((g, pick_group(g, a, results, key)?, a.len()));
        }
    }
    let label = |g: &TuneGroup, t: usize| crate::config::tune::setting_label(&g.trials[t].setting);
    let mut cols = vec![
        col_s("line", rows.iter().map(|r| r.0.line.clone()).collect()),
        col_s("method", rows.iter().map(|r| r.0.method.clone()).collect()),
        col_u("budget", rows.iter().map(|r| r.0.budget.unwrap_or(0)).collect()),
        col_u("trial", rows.iter().map(|r| r.1.trial as u64).collect()),
        col_s("setting", rows.iter().map(|r| label(r.0, r.1.trial)).collect()),
    ];
    for (full, short) in names {
        cols.push(col_s(
            short,
            rows.iter()
                .map(|r| {
                    r.0.trials[r.1.trial]
                        .setting
                        .iter()
                        .find(|(k, _)| k == full)
                        .map(|(_, v)| value_text(v))
                        .unwrap_or_default()
                })
                .collect(),
        ));
    }
    cols.extend([
        col_s("select", vec![key.name().to_string(); rows.len()]),
        col_f("mean", rows.iter().map(|r| r.1.mean).collect()),
        col_f("sd", rows.iter().map(|r| r.1.sd).collect()),
        col_s(
            "runner_up",
            rows.iter().map(|r| r.1.runner_up.map(|(t, _)| label(r.0, t)).unwrap_or_default()).collect(),
        ),
        col_f("runner_up_mean", rows.iter().map(|r| r.1.runner_up.map(|x| x.1).unwrap_or(f64::NAN)).collect()),
        col_u("seeds_agreeing", rows.iter().map(|r| r.1.agreement.0 as u64).collect()),
        col_u("tuning_seeds", rows.iter().map(|r| r.1.agreement.1 as u64).collect()),
        col_s("edge", rows.iter().map(|r| r.1.edges.join("; ")).collect()),
        col_u("trials", vec![plan.trials_per_group as u64; rows.len()]),
        col_u("full_runs", rows.iter().map(|r| r.2 as u64).collect()),
    ]);
    write_frame(results, "picks", DataFrame::new(rows.len(), cols)?)?;
    // What the report states about the protocol.
    let s = &plan.spec;
    let rungs = s
        .halving
        .map(|h| format!("successive halving, eta {}, rungs at {:?} of the steps", h.eta, h.rungs()))
        .unwrap_or_else(|| "no halving".into());
    let protocol = format!(
        "{} trials per method × budget ({:?}), selected on {} averaged over tuning seeds {:?}; {rungs}",
        plan.trials_per_group,
        s.strategy,
        key.name(),
        s.tuning_seeds
    );
    std::fs::write(results.join("tuning_protocol.txt"), protocol + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    fn group(values: &[f64]) -> TuneGroup {
        let trials = values
            .iter()
            .map(|&lr| crate::config::TunedTrial {
                setting: vec![("training.lr".into(), Value::Number(lr.into()))],
                rungs: vec![],
                full: vec![],
                finals: vec![],
            })
            .collect();
        TuneGroup { line: "cqr-b800".into(), method: "cqr".into(), budget: Some(800), trials }
    }

    /// The pick follows validation; ties go to the earlier trial; a diverged trial is the worst;
    /// an edge pick is flagged; agreement counts the seeds whose own best is the pick.
    #[test]
    fn the_pick_is_the_best_mean_validation_metric() {
        let g = group(&[0.1, 0.01, 0.001]);
        let per_seed = vec![vec![0.50, 0.52], vec![0.45, 0.46], vec![0.47, 0.445]];
        let p = pick_of(&g, &[0, 1, 2], &per_seed, SelectKey::ValBce);
        assert_eq!((p.trial, p.agreement, p.edges.is_empty()), (1, (1, 2), true), "{p:?}");
        assert_eq!(p.runner_up.map(|x| x.0), Some(2));
        let auc = pick_of(&g, &[0, 1, 2], &per_seed, SelectKey::ValAuc);
        assert_eq!(auc.trial, 0);
        assert_eq!(auc.edges, vec!["lr=0.1 (largest tried)".to_string()]);
        let diverged = vec![vec![f64::NAN, 0.1], vec![0.45, 0.46], vec![0.47, 0.445]];
        assert_eq!(pick_of(&g, &[0, 1, 2], &diverged, SelectKey::ValBce).trial, 1);
        let tie = vec![vec![0.5], vec![0.4], vec![0.4]];
        assert_eq!(pick_of(&g, &[0, 1, 2], &tie, SelectKey::ValBce).trial, 1);
        // Only the survivors of halving can be picked.
        assert_eq!(pick_of(&g, &[0, 2], &per_seed, SelectKey::ValBce).trial, 2);
    }
}
