//! `cqr`: compressed-embedding benchmarks from the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};

use cqr_data::inspect::inspect_tabular;
use cqr_data::movielens::load_movielens;
use cqr_data::{BadRowPolicy, TabularFormat};
use cqr_models::{MlpBackend, Precision};
use cqr_runner::config::load_experiment;
use cqr_runner::report::{group_summary, markdown_table, write_report_against};
use cqr_runner::sweep::{
    load_records, parse_shard, shard_cells, sweep, SweepOptions, Tolerance, Verdict, CROSS_CPU_TOLERANCE,
};
use cqr_runner::{bench, frames, plot, slurm};

#[derive(Parser)]
#[command(
    name = "cqr",
    version,
    about = "Compressed embedding tables for recommendation: train, sweep, tabulate, plot"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Look at raw data files.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
    /// Run an experiment grid (default: experiments/quick.yaml); finished cells are skipped.
    Sweep(SweepArgs),
    /// Print a Slurm script that runs a grid as an sbatch job array (one shard a task, one
    /// results directory) and then rebuilds its tables, charts and report.
    Slurm {
        file: PathBuf,
        /// Array tasks: the grid is split into this many shards.
        #[arg(long)]
        shards: usize,
        /// Wall-clock limit of one task: hours (`4`, `1.5`), HH:MM:SS or D-HH:MM:SS (written
        /// to sbatch as HH:MM:SS; `04:00`, which sbatch reads as four minutes, is refused).
        #[arg(long, default_value = "4")]
        time: String,
        /// CPUs of one task; also the cells it runs at once (--jobs).
        #[arg(long, default_value_t = 2)]
        cpus: usize,
        /// Memory of one task (sbatch --mem).
        #[arg(long, default_value = "16G")]
        mem: String,
        /// Results directory (default: results/<experiment name>).
        #[arg(long)]
        results: Option<PathBuf>,
        /// The cqr binary the jobs run (default: this one).
        #[arg(long)]
        cqr: Option<PathBuf>,
    },
    /// Regenerate every chart of a results directory from its tables.
    Plot {
        results: PathBuf,
        /// Also the paired chart of A − B test BCE per cap (besides cqr,ce and cqr,hashing):
        /// `--against hashing,ce` for hashing − CE. May be given more than once.
        #[arg(long, value_name = "A,B")]
        against: Vec<String>,
    },
    /// Write RESULTS_DIR/report.md from the tables and charts.
    Report {
        results: PathBuf,
        /// Methods the paired section compares every other method against, in order (the
        /// earlier of two references is A: CQR − dense).
        #[arg(long, value_delimiter = ',', default_value = "cqr,dense")]
        against: Vec<String>,
    },
    /// Paired differences A − B of the same lines in two results directories (by dataset, line,
    /// budget and seed), e.g. a tuned grid against its shared-setting twin: the gain from tuning.
    Compare { a: PathBuf, b: PathBuf },
    /// Write a cell's model as served (model.safetensors, test.safetensors, manifest.json) for
    /// other tools: the cell is trained again from its stored config, keeping the model its scores
    /// were read from. `python3 tools/load_export.py DIR` re-computes its test BCE with numpy.
    Export {
        /// A cell directory: results/<experiment>/cells/<id>
        cell: PathBuf,
        /// Where to write the files
        out: PathBuf,
        /// Dataset cache (default: `.cache` beside the results directory, as `cqr sweep`)
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Training throughput (samples/s) of the DLRM preset on random data.
    Bench {
        #[arg(long, default_value = "kaggle")]
        preset: String,
        #[arg(long, default_value_t = 2048)]
        batch: usize,
        /// Training steps per case and repeat.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Timed runs per case, after one untimed warm-up run; the table gives their median and
        /// range.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Cases to run (default: all): dense-10k, dense-1m, hashing, qr, cqr, cqr-1m,
        /// hashing-1m, gmf-ml1m, bloom-1m, hashednets-1m, robe-1m, hash_embedding-1m,
        /// lowdim-1m, ttrec-1m, dhe-1m, cafe-1m, adaembed-1m, alpt-1m, mdfreq-1m, pep-1m, magprune-1m, mpzch-1m,
        /// cluster-kaggle, ingest, gemm (every matrix product of one step, per kernel).
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
        /// Backend of the MLPs (wgpu needs a build with `--features wgpu`).
        #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
        backend: BackendArg,
        /// Arithmetic of the MLPs' matrix products (bf16: bf16 operands, f32 accumulation; the
        /// fused CPU kernels only). GMF has no MLP and stays f32.
        #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
        precision: PrecisionArg,
        /// Instead of the plain table: a paired comparison in this process, `--repeats` rounds
        /// alternating A and B per case (precision: f32 vs bf16; kernels: burn's graph vs fused),
        /// with the geometric-mean ratio B/A and its 95% interval. Judges a change on a noisy
        /// machine where two separate runs differ by more than the change.
        #[arg(long, value_enum)]
        ab: Option<AbArg>,
        /// cluster-kaggle: rows of planted data whose ids count as seen.
        #[arg(long, default_value_t = 2_000_000)]
        cluster_rows: usize,
        /// cluster-kaggle: CQR options as JSON (default `{"n_chunks": 4}`).
        #[arg(long)]
        cluster_options: Option<String>,
        /// ingest: rows of the generated Criteo TSV (about 290 bytes a row).
        #[arg(long, default_value_t = 1_000_000)]
        ingest_rows: u64,
    },
}

/// `cqr sweep`'s arguments.
#[derive(clap::Args)]
struct SweepArgs {
    file: Option<PathBuf>,
    /// Cells to run at once (default: one per core, at most one per 4 GiB of available
    /// memory; results are the same for any value).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only shard i of n (0-based), e.g. `--shard $SLURM_ARRAY_TASK_ID/8`.
    #[arg(long)]
    shard: Option<String>,
    /// Results directory (default: results/<experiment name>).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Where preprocessed datasets are cached (default: `.cache` beside the results
    /// directory, e.g. results/.cache); shared by every grid that uses it.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Stop after this many newly finished cells.
    #[arg(long)]
    max_cells: Option<usize>,
    /// Print the cells and exit.
    #[arg(long)]
    dry_run: bool,
    /// Instead of running new cells: re-run N finished cells (chosen by --verify-seed) and
    /// compare every stored metric with the new run: bit for bit when the record was trained
    /// on this CPU model, within a relative --tolerance when on another (GEMM kernels sum in
    /// another order). Exit status 1 on a difference beyond that.
    #[arg(long, value_name = "N")]
    verify: Option<usize>,
    #[arg(long, default_value_t = 0)]
    verify_seed: u64,
    /// --verify: demand every metric bit for bit, whatever CPU trained the record.
    #[arg(long)]
    exact: bool,
    /// --verify: relative difference allowed for a record from another CPU model.
    #[arg(long, default_value_t = CROSS_CPU_TOLERANCE)]
    tolerance: f64,
}

#[derive(Subcommand)]
enum DataCmd {
    /// Rows, label rate, missing rate and cardinality per column.
    Inspect {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Criteo)]
        format: Format,
        /// Skip (and count) malformed rows instead of stopping at the first.
        #[arg(long)]
        skip_bad_rows: bool,
    },
    /// Write planted Criteo-format TSV (label, 13 integers, 26 hex values): for out-of-core tests
    /// and ingest benchmarks at any size.
    SynthTsv {
        out: PathBuf,
        #[arg(long)]
        rows: u64,
        /// Distinct values per categorical column (Zipf-distributed).
        #[arg(long, default_value_t = 1_000_000)]
        vocab: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Flex,
    Wgpu,
}

impl From<BackendArg> for MlpBackend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Flex => MlpBackend::Flex,
            BackendArg::Wgpu => MlpBackend::Wgpu,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum AbArg {
    Precision,
    Kernels,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Criteo,
    Avazu,
    Movielens,
    /// Any CSV/TSV (`.tsv`: tab-separated) or Parquet file with a header.
    Table,
}

fn require_dir(p: &Path) -> Result<()> {
    if !p.is_dir() {
        bail!("{}: no such results directory (run `cqr sweep` first)", p.display());
    }
    // An interrupted sweep has records but no tables yet.
    if !p.join("summary.parquet").exists() && !p.join("least_squares.parquet").exists() && p.join("cells").is_dir() {
        bail!("{}: finished cells but no tables yet (an interrupted sweep?): run `cqr sweep FILE --results {} --max-cells 0` to build them", p.display(), p.display());
    }
    Ok(())
}

fn verify_cells(
    exp: &cqr_runner::config::Experiment,
    opts: &SweepOptions,
    n: usize,
    seed: u64,
    tol: Tolerance,
) -> Result<()> {
    let checked = cqr_runner::sweep::verify(exp, opts, n, seed)?;
    let (mut bad, mut within) = (0, 0);
    for v in &checked {
        match v.verdict(tol) {
            Verdict::Identical => println!("identical  {} ({:.1} s)", v.name, v.wall_s),
            Verdict::WithinTolerance { largest } => {
                within += 1;
                println!("within tolerance on another CPU  {} ({:.1} s; {} metrics differ, largest relative difference {largest:.1e})", v.name, v.wall_s, v.differences.len());
                print_machines(v);
            }
            Verdict::Different => {
                bad += 1;
                println!("DIFFERENT  {} ({} metrics):", v.name, v.differences.len());
                print_machines(v);
                // The largest first: a flipped decision (an integer, a word) before rounding.
                let mut ds: Vec<_> = v.differences.iter().collect();
                ds.sort_by(|a, b| b.relative.total_cmp(&a.relative));
                for d in ds.iter().take(10) {
                    println!("    {d}");
                }
            }
        }
    }
    if bad > 0 {
        let why = match tol {
            Tolerance::Exact => "bit for bit (--exact)".to_string(),
            Tolerance::Relative(t) => {
                format!("bit for bit on the record's own CPU, within relative {t:.0e} on another")
            }
        };
        bail!("{bad} of {} re-run cells differ from their stored records ({why})", checked.len());
    }
    if within > 0 {
        println!("{} cells re-run: {} identical, {within} within tolerance on another CPU (relative {:.0e}; GEMM kernels differ between CPU models, see README)", checked.len(), checked.len() - within, CROSS_CPU_TOLERANCE);
    } else {
        println!("{} cells re-run: every metric identical to the stored records", checked.len());
    }
    Ok(())
}

/// `--dry-run` of a tuned experiment: the search's cells, and what follows them.
fn print_tune_plan(exp: &cqr_runner::config::Experiment) {
    let Some(plan) = &exp.tune else { return };
    let mut n = 0;
    for g in &plan.groups {
        for t in &g.trials {
            for c in t.rungs.iter().flatten().chain(&t.full) {
                println!("{}  {}", c.id, c.name);
                n += 1;
            }
        }
    }
    let finals = plan.groups.first().and_then(|g| g.trials.first()).map(|t| t.finals.len()).unwrap_or(0);
    println!("{n} tuning cells at most ({} groups × {} trials; halving stops some early), then each group's pick on {finals} seeds ({} cells)", plan.groups.len(), plan.trials_per_group, plan.groups.len() * finals);
}

fn print_machines(v: &cqr_runner::sweep::Verified) {
    if v.stored_cpu != v.cpu {
        println!(
            "    trained on {}, re-run on {}",
            v.stored_cpu.as_deref().unwrap_or("an unrecorded CPU"),
            v.cpu.as_deref().unwrap_or("?")
        );
    }
    if v.stored_kernels != v.kernels {
        println!(
            "    trained with the {} kernels, re-run with the {} ones (CQR_KERNELS=burn selects burn's op graph)",
            v.stored_kernels, v.kernels
        );
    }
}

// mimalloc: glibc malloc maps and unmaps the large per-step buffers of the MLPs every step
// (page faults plus memset/memmove: ~10% of a step, measured with perf; see the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` (option 15 in the v3 header this crate builds) set to -1: freed
/// memory is kept, not returned to the OS. A training step frees and re-allocates the same
/// large activation buffers; purged, their pages were faulted in and zeroed again every step
/// (`clear_page_erms`, 5.3% of a dense-10k step in perf, AMD EPYC family 25 model 17). The
/// process keeps its peak footprint instead, which it reaches every step anyway.
fn keep_freed_memory() {
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: called in main before any other thread exists (mimalloc's options are not
    // thread safe); the option index is valid for the bundled mimalloc (checked in a test).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() {
    // Die quietly on a closed pipe (`cqr ... | head`), like other command-line tools, instead of
    // panicking inside println!.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Data { cmd: DataCmd::Inspect { file, format, skip_bad_rows } } => inspect(&file, format, skip_bad_rows)?,
        Cmd::Data { cmd: DataCmd::SynthTsv { out, rows, vocab, seed } } => {
            let bytes = cqr_data::synthetic::write_criteo_tsv(&out, rows, vocab, seed)?;
            println!("{}: {rows} rows, {bytes} bytes", out.display());
        }
        Cmd::Sweep(args) => sweep_cmd(args)?,
        Cmd::Slurm { file, shards, time, cpus, mem, results, cqr } => {
            let exp = load_experiment(&file)?;
            let results = results.unwrap_or_else(|| Path::new("results").join(&exp.name));
            let cqr = match cqr {
                Some(p) => p,
                None => std::env::current_exe()?,
            };
            let workdir = std::env::current_dir()?;
            let o =
                slurm::SlurmOptions { file, name: exp.name.clone(), results, shards, time, cpus, mem, cqr, workdir };
            print!("{}", slurm::script(&o)?);
        }
        Cmd::Plot { results, against } => plot_cmd(&results, &against)?,
        Cmd::Report { results, against } => {
            require_dir(&results)?;
            println!("{}", write_report_against(&results, &against)?.display())
        }
        Cmd::Export { cell, out, cache } => {
            require_dir(&cell)?;
            // results/<experiment>/cells/<id> -> results/.cache
            let results = cell.ancestors().nth(2).unwrap_or(Path::new("."));
            let cache = cache.unwrap_or_else(|| results.parent().unwrap_or(Path::new(".")).join(".cache"));
            print!("{}", cqr_runner::export::export_cell(&cell, &out, &cache)?);
        }
        Cmd::Compare { a, b } => {
            require_dir(&a)?;
            require_dir(&b)?;
            print!("{}", cqr_runner::report::compare_dirs(&a, &b)?);
        }
        Cmd::Bench {
            preset,
            batch,
            steps,
            repeats,
            cases,
            backend,
            precision,
            ab,
            cluster_rows,
            cluster_options,
            ingest_rows,
        } => {
            let ab = ab.map(|a| match a {
                AbArg::Precision => bench::AbAxis::Precision,
                AbArg::Kernels => bench::AbAxis::Kernels,
            });
            bench::run(&bench::BenchOptions {
                preset,
                batch,
                steps,
                repeats,
                cases,
                backend: backend.into(),
                precision: precision.into(),
                ab,
                cluster_rows,
                cluster_options,
                ingest_rows,
            })?
        }
    }
    Ok(())
}

/// `cqr sweep`: run (or dry-run, or verify) a grid, then write its tables and charts.
fn sweep_cmd(args: SweepArgs) -> Result<()> {
    let SweepArgs { file, jobs, shard, results, cache, max_cells, dry_run, verify, verify_seed, exact, tolerance } =
        args;
    let file = match file {
        Some(f) => f,
        None => {
            let default = PathBuf::from("experiments/quick.yaml");
            if !default.exists() {
                let here = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
                bail!("no experiment file given, and the default {} is not under {here}: run from the repository root or name a YAML file", default.display());
            }
            default
        }
    };
    let exp = load_experiment(&file)?;
    let results = results.unwrap_or_else(|| Path::new("results").join(&exp.name));
    let shard = shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));
    if dry_run && exp.tune.is_some() {
        print_tune_plan(&exp);
        return Ok(());
    }
    if dry_run {
        let cells = shard_cells(&exp, shard);
        for c in &cells {
            println!("{}  {}", c.id, c.name);
        }
        println!("{} cells", cells.len());
        return Ok(());
    }
    let cache = cache.unwrap_or_else(|| results.parent().unwrap_or(Path::new(".")).join(".cache"));
    if !dry_run
        && exp.cells.iter().any(|c| !matches!(c.config.dataset, cqr_runner::config::DatasetConfig::LeastSquares(_)))
    {
        eprintln!("dataset cache: {} (--cache DIR to move it)", cache.display());
    }
    let jobs = resolve_jobs(jobs, verify.is_some() || max_cells == Some(0))?;
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        bail!("--tolerance {tolerance}: must be a non-negative number");
    }
    let opts = SweepOptions { results: results.clone(), cache, jobs, shard, progress: true, max_cells };
    if let Some(n) = verify {
        let tol = if exact { Tolerance::Exact } else { Tolerance::Relative(tolerance) };
        return verify_cells(&exp, &opts, n, verify_seed, tol);
    }
    let rep = sweep(&exp, &opts)?;
    let stopped =
        if rep.not_started > 0 { format!(", {} not started (disk full)", rep.not_started) } else { String::new() };
    eprintln!("{} cells ran ({} infeasible at their budget), {} were already done, {} failed{stopped}; {} dataset cache(s) built", rep.ran.len(), rep.infeasible, rep.already_done, rep.failed.len(), rep.cache_builds);
    write_outputs(&results)?;
    println!("results in {}", results.display());
    if !rep.failed.is_empty() {
        for (n, e) in &rep.failed {
            eprintln!("failed: {n}: {e}");
        }
        bail!("{} cells failed", rep.failed.len());
    }
    Ok(())
}

/// `--jobs`: as given, 1 when verifying or only rewriting tables, else one cell per core.
fn resolve_jobs(jobs: Option<usize>, single: bool) -> Result<usize> {
    Ok(match jobs {
        Some(0) => bail!("--jobs 0: at least one cell must run at a time"),
        Some(j) => j,
        None if single => 1,
        None => {
            let (j, why) = cqr_runner::jobs::auto_jobs();
            eprintln!("{why}");
            j
        }
    })
}

/// The results directory's tables, charts and summary, from its records.
fn write_outputs(results: &Path) -> Result<()> {
    cqr_runner::sweep::with_results_lock(results, || {
        let records = load_records(results)?;
        frames::write_tables(results, &records)?;
        for p in plot::plot_results(results)? {
            eprintln!("wrote {}", p.display());
        }
        if results.join("summary.parquet").exists() {
            println!("{}", markdown_table(&group_summary(results)?));
        }
        Ok(())
    })
}

/// `cqr data inspect`.
fn inspect(file: &Path, format: Format, skip_bad_rows: bool) -> Result<()> {
    let policy = if skip_bad_rows { BadRowPolicy::Skip } else { BadRowPolicy::Fail };
    match format {
        Format::Criteo | Format::Avazu => {
            let f = if matches!(format, Format::Criteo) { TabularFormat::Criteo } else { TabularFormat::Avazu };
            print!("{}", inspect_tabular(file, f, policy)?);
        }
        Format::Table => print!("{}", cqr_data::table::inspect_table(file, policy)?),
        Format::Movielens => {
            let (ds, neutral) = load_movielens(file, None, policy)?;
            println!("rows: {} (binarised; {neutral} neutral ratings dropped)", ds.n_rows());
            println!("label rate: {:.4}", ds.label_rate(0..ds.n_rows()));
            println!("skipped: {}", ds.skipped);
            println!("users: {}\nitems: {}", ds.cardinalities[0], ds.cardinalities[1]);
            println!("train rows: {}, held-out rows: {}", ds.splits.train.len(), ds.splits.val.len());
        }
    }
    Ok(())
}

/// `cqr plot`.
fn plot_cmd(results: &Path, against: &[String]) -> Result<()> {
    require_dir(results)?;
    let mut pairs = plot::default_pairs();
    for p in against {
        let Some((a, b)) = p.split_once(',') else { bail!("--against {p}: expected two method names, A,B") };
        let known = cqr_methods::method_names();
        if let Some(m) = [a, b].into_iter().find(|m| !known.contains(m)) {
            bail!("--against {p}: unknown method `{m}` (known: {})", known.join(", "));
        }
        pairs.push((a.to_string(), b.to_string()));
    }
    let written = plot::plot_results_with(results, &pairs)?;
    if written.is_empty() {
        bail!("{}: no tables to plot (summary.parquet / least_squares.parquet)", results.display());
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Option 15 is `purge_delay`: its default in the bundled mimalloc v3 (`src/options.c`) is
    /// 1000 ms, and it reads back -1 once set. (A wrong index would show another option's
    /// default: 0 or 1 for its neighbours.)
    #[test]
    fn the_purge_option_index_is_right() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(15) }, 1000);
        }
        super::keep_freed_memory();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(15) }, -1);
    }
}
