//! `cqr`: compressed-embedding benchmarks from the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};

use cqr_data::inspect::inspect_tabular;
use cqr_data::movielens::load_movielens;
use cqr_data::{BadRowPolicy, TabularFormat};
use cqr_models::bench::{random_dataset, throughput};
use cqr_models::{DlrmConfig, EmbeddingSpec, ModelConfig, OptimizerKind, TrainConfig};
use cqr_runner::config::load_experiment;
use cqr_runner::report::{group_summary, markdown_table, write_report};
use cqr_runner::sweep::{load_records, parse_shard, sweep, SweepOptions};
use cqr_runner::{plot, tables};

#[derive(Parser)]
#[command(name = "cqr", version, about = "Compressed embedding tables for recommendation: train, sweep, tabulate, plot")]
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
    Sweep {
        file: Option<PathBuf>,
        /// Cells to run at once.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Run only shard i of n (0-based), e.g. `--shard $SLURM_ARRAY_TASK_ID/8`.
        #[arg(long)]
        shard: Option<String>,
        /// Results directory (default: results/<experiment name>).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Stop after this many newly finished cells.
        #[arg(long)]
        max_cells: Option<usize>,
        /// Print the cells and exit.
        #[arg(long)]
        dry_run: bool,
    },
    /// Regenerate every chart of a results directory from its tables.
    Plot { results: PathBuf },
    /// Write RESULTS_DIR/report.md from the tables and charts.
    Report { results: PathBuf },
    /// Training throughput (samples/s) of the DLRM preset on random data.
    Bench {
        #[arg(long, default_value = "kaggle")]
        preset: String,
        #[arg(long, default_value_t = 2048)]
        batch: usize,
        /// Training steps per case.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Cases to run (default: all): dense-10k, dense-1m, hashing, qr, cqr, cqr-1m.
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
    },
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Criteo,
    Avazu,
    Movielens,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Data { cmd: DataCmd::Inspect { file, format, skip_bad_rows } } => {
            let policy = if skip_bad_rows { BadRowPolicy::Skip } else { BadRowPolicy::Fail };
            match format {
                Format::Criteo | Format::Avazu => {
                    let f = if matches!(format, Format::Criteo) { TabularFormat::Criteo } else { TabularFormat::Avazu };
                    print!("{}", inspect_tabular(&file, f, policy)?);
                }
                Format::Movielens => {
                    let (ds, neutral) = load_movielens(&file, None, policy)?;
                    println!("rows: {} (binarised; {neutral} neutral ratings dropped)", ds.n_rows());
                    println!("label rate: {:.4}", ds.label_rate(0..ds.n_rows()));
                    println!("skipped: {}", ds.skipped);
                    println!("users: {}\nitems: {}", ds.cardinalities[0], ds.cardinalities[1]);
                    println!("train rows: {}, held-out rows: {}", ds.splits.train.len(), ds.splits.val.len());
                }
            }
        }
        Cmd::Sweep { file, jobs, shard, results, max_cells, dry_run } => {
            let file = file.unwrap_or_else(|| PathBuf::from("experiments/quick.yaml"));
            let exp = load_experiment(&file)?;
            let results = results.unwrap_or_else(|| Path::new("results").join(&exp.name));
            if dry_run {
                for c in &exp.cells {
                    println!("{}  {}", c.id, c.name);
                }
                println!("{} cells", exp.cells.len());
                return Ok(());
            }
            let shard = shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));
            let cache = results.parent().unwrap_or(Path::new(".")).join(".cache");
            let opts = SweepOptions { results: results.clone(), cache, jobs: jobs.max(1), shard, progress: true, max_cells };
            let rep = sweep(&exp, &opts)?;
            eprintln!("{} cells ran, {} were already done, {} failed", rep.ran.len(), rep.already_done, rep.failed.len());
            let records = load_records(&results)?;
            tables::write_tables(&results, &records)?;
            for p in plot::plot_results(&results)? {
                eprintln!("wrote {}", p.display());
            }
            if results.join("summary.parquet").exists() {
                println!("{}", markdown_table(&group_summary(&results)?));
            }
            println!("results in {}", results.display());
            if !rep.failed.is_empty() {
                for (n, e) in &rep.failed {
                    eprintln!("failed: {n}: {e}");
                }
                bail!("{} cells failed", rep.failed.len());
            }
        }
        Cmd::Plot { results } => {
            let written = plot::plot_results(&results)?;
            if written.is_empty() {
                bail!("{}: no tables to plot (summary.parquet / least_squares.parquet)", results.display());
            }
            for p in written {
                println!("{}", p.display());
            }
        }
        Cmd::Report { results } => println!("{}", write_report(&results)?.display()),
        Cmd::Bench { preset, batch, steps, cases } => bench(&preset, batch, steps, &cases)?,
    }
    Ok(())
}

fn bench(preset: &str, batch: usize, steps: usize, cases: &[String]) -> Result<()> {
    let Some(dlrm) = DlrmConfig::preset(preset) else { bail!("unknown preset `{preset}` (kaggle, small)") };
    let model = ModelConfig::Dlrm(dlrm);
    let cfg = TrainConfig { optimizer: OptimizerKind::Adam, lr: 1e-3, batch_size: batch, epochs: 1, ..Default::default() };
    let all = [
        ("dense-10k", "dense", 10_000usize, u64::MAX),
        ("dense-1m", "dense", 1_000_000, u64::MAX),
        ("hashing", "hashing", 10_000, 3200),
        ("qr", "qr", 10_000, 3200),
        ("cqr", "cqr", 10_000, 3200),
        ("cqr-1m", "cqr", 1_000_000, 3200),
    ];
    println!("DLRM `{preset}`, 26 tables, batch {batch}, {steps} steps, Adam (lazy Adam for tables), {} threads", rayon::current_num_threads());
    println!("| case | method | rows per table | cap | samples/s |\n|---|---|---:|---:|---:|");
    for (name, method, vocab, cap) in all {
        if !cases.is_empty() && !cases.iter().any(|c| c == name) {
            continue;
        }
        let ds = random_dataset(batch * steps, 26, vocab, 7);
        let spec = EmbeddingSpec { method: method.into(), budget: cap, options: serde_json::Value::Null, init_scale: 0.05 };
        let sps = throughput(&model, &spec, &ds, &cfg)?;
        let cap_s = if cap == u64::MAX { "-".to_string() } else { cap.to_string() };
        println!("| {name} | {method} | {vocab} | {cap_s} | {sps:.0} |");
    }
    Ok(())
}
