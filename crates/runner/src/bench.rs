//! `cqr bench`: training throughput per case, the MLP's achieved GFLOP/s against a GEMM peak
//! measured in the same process, and the time of one CQR cluster step at Criteo Kaggle scale.
//! Benchmarks, not tests: figures depend on the machine and its load.

use anyhow::{bail, Result};
use serde_json::json;

use cqr_data::synthetic::KAGGLE_CARDINALITIES;
use cqr_models::bench::{
    cluster_step, dlrm_train_flops_per_sample, gemm_peak_gflops, random_dataset, random_gmf_dataset, throughput,
};
use cqr_models::{DlrmConfig, EmbeddingSpec, MlpBackend, ModelConfig, OptimizerKind, Precision, TrainConfig};

/// Throughput cases: (name, model, method, rows per table, cap).
const CASES: [(&str, &str, &str, usize, u64); 22] = [
    ("dense-10k", "dlrm", "dense", 10_000, u64::MAX),
    ("dense-1m", "dlrm", "dense", 1_000_000, u64::MAX),
    ("hashing", "dlrm", "hashing", 10_000, 3200),
    ("qr", "dlrm", "qr", 10_000, 3200),
    ("cqr", "dlrm", "cqr", 10_000, 3200),
    ("cqr-1m", "dlrm", "cqr", 1_000_000, 3200),
    ("hashing-1m", "dlrm", "hashing", 1_000_000, 3200),
    ("gmf-ml1m", "gmf", "dense", 0, u64::MAX),
    ("bloom-1m", "dlrm", "bloom", 1_000_000, 3200),
    ("hashednets-1m", "dlrm", "hashednets", 1_000_000, 3200),
    ("robe-1m", "dlrm", "robe", 1_000_000, 3200),
    ("hash_embedding-1m", "dlrm", "hash_embedding", 1_000_000, 3200),
    // d' = 4: 4 x (1M + 16) parameters per table.
    ("lowdim-1m", "dlrm", "lowdim", 1_000_000, 4_000_064),
    ("ttrec-1m", "dlrm", "ttrec", 1_000_000, 3200),
    ("dhe-1m", "dlrm", "dhe", 1_000_000, 3200),
    ("cafe-1m", "dlrm", "cafe", 1_000_000, 3200),
    ("adaembed-1m", "dlrm", "adaembed", 1_000_000, 3200),
    ("alpt-1m", "dlrm", "alpt", 1_000_000, 3200),
    // Widths by training count in 4 blocks, about d' = 4 on average: the low-dim case's budget.
    ("mdfreq-1m", "dlrm", "mdfreq", 1_000_000, 4_000_064),
    // The full 1M x 16 table with its thresholds while searching (the budget binds at the prune).
    ("pep-1m", "dlrm", "pep", 1_000_000, 3200),
    ("magprune-1m", "dlrm", "magprune", 1_000_000, 3200),
    ("mpzch-1m", "dlrm", "mpzch", 1_000_000, 3200),
];

/// All case names, for `--cases` (plus `cluster-kaggle`, the cluster-step benchmark, `ingest`,
/// and `gemm`, every matrix product of one DLRM step through each kernel).
pub fn case_names() -> Vec<&'static str> {
    CASES.iter().map(|c| c.0).chain(["cluster-kaggle", "ingest", "gemm"]).collect()
}

pub struct BenchOptions {
    pub preset: String,
    pub batch: usize,
    pub steps: usize,
    /// Timed runs per case after one untimed warm-up run.
    pub repeats: usize,
    pub cases: Vec<String>,
    pub backend: MlpBackend,
    /// Arithmetic of the DLRM MLPs' GEMMs (GMF has no MLP: f32).
    pub precision: Precision,
    /// A paired comparison in one process instead of the plain table (`repeats` rounds).
    pub ab: Option<AbAxis>,
    /// Rows of planted data whose ids count as seen before the cluster step.
    pub cluster_rows: usize,
    /// CQR options of the cluster step (JSON object; default `{"n_chunks": 4}`).
    pub cluster_options: Option<String>,
    /// ingest: rows of the generated Criteo TSV file.
    pub ingest_rows: u64,
}

pub use cqr_models::probe::cpu_model;

pub fn run(o: &BenchOptions) -> Result<()> {
    let Some(dlrm) = DlrmConfig::preset(&o.preset) else { bail!("unknown preset `{}` (kaggle, small)", o.preset) };
    for c in &o.cases {
        if !case_names().contains(&c.as_str()) {
            bail!("unknown bench case `{c}` (known: {})", case_names().join(", "));
        }
    }
    let wanted = |name: &str| o.cases.is_empty() || o.cases.iter().any(|c| c == name);
    let threads = rayon::current_num_threads();
    let device = o.backend.device()?;
    // The peak moves with the machine's load (107-158 GFLOP/s between runs of one sitting,
    // 2026-12-06): it is measured again before every DLRM case and the best so far is used, so a
    // slow moment at the start does not inflate the "of GEMM peak" column.
    let mut peak = gemm_peak_gflops(&device, 2048, 1024, 1024, 5);
    let flops = dlrm_train_flops_per_sample(&dlrm, 26);
    print_header(o, threads, peak, flops, &wanted)?;
    let cfg = TrainConfig {
        optimizer: OptimizerKind::Adam,
        lr: 1e-3,
        batch_size: o.batch,
        epochs: 1,
        backend: o.backend,
        precision: o.precision,
        ..Default::default()
    };
    for (name, model, method, vocab, cap) in CASES {
        if !wanted(name) {
            continue;
        }
        let spec = EmbeddingSpec {
            method: method.into(),
            budget: cap,
            options: serde_json::Value::Null,
            init_scale: 0.05,
            quantize: None,
            dense_under_cap: true,
        };
        let (net, ds) = case_data(o, model, vocab, &dlrm);
        let is_gmf = matches!(net, ModelConfig::Gmf { .. });
        if let Some(axis) = o.ab {
            if axis == AbAxis::Precision && is_gmf {
                println!("| {name} | {axis:?}: GMF has no MLP | | | | |");
            } else {
                ab_case(name, axis, o.repeats, |cfg| throughput(&net, &spec, &ds, cfg), &cfg)?;
            }
            continue;
        }
        // GMF has no MLP: f32.
        let cfg = if is_gmf { TrainConfig { precision: Precision::F32, ..cfg.clone() } } else { cfg.clone() };
        if !is_gmf {
            peak = peak.max(gemm_peak_gflops(&device, 2048, 1024, 1024, 5));
        }
        let runs = repeated(o.repeats, || throughput(&net, &spec, &ds, &cfg))?;
        let (rows, gflops_per_sps) =
            if is_gmf { ("6040/3706".to_string(), None) } else { (vocab.to_string(), Some(flops / 1e9)) };
        let (sps, lo, hi) = median_range(&runs);
        let cap_s = if cap == u64::MAX { "-".to_string() } else { cap.to_string() };
        let (g, f) = gflops_per_sps.map_or(("-".into(), "-".into()), |k| {
            (format!("{:.1}", sps * k), format!("{:.0}%", 100.0 * sps * k / peak))
        });
        println!("| {name} | {model} | {method} | {rows} | {cap_s} | {sps:.0} | {lo:.0}-{hi:.0} | {g} | {f} |");
    }
    if o.ab.is_none() && CASES.iter().any(|c| wanted(c.0) && c.1 != "gmf") {
        println!("GEMM peak, best over the run: {peak:.1} GFLOP/s");
    }
    other_cases(o, &dlrm, &cfg, threads, &wanted)
}

/// The machine, the peak and the table head of `cqr bench`.
fn print_header(o: &BenchOptions, threads: usize, peak: f64, flops: f64, wanted: &dyn Fn(&str) -> bool) -> Result<()> {
    println!(
        "{}, {threads} threads, backend {:?}, {} kernels (CQR_KERNELS=burn: burn's op graph), MLP precision {:?}",
        cpu_model(),
        o.backend,
        cqr_models::fused::kernels(),
        o.precision
    );
    println!("GEMM peak (one 2048x1024x1024 f32 matmul through the backend, best of 5; measured again before each DLRM case, the best so far used): {peak:.1} GFLOP/s");
    if o.repeats == 0 {
        bail!("--repeats must be >= 1");
    }
    println!("DLRM `{}`, batch {}, {} steps, Adam (lazy Adam for tables); per case one untimed warm-up run, then {} timed runs: median [min, max]", o.preset, o.batch, o.steps, o.repeats);
    println!("MLP work: {:.3} MFLOP per training sample (forward + backward, 26 tables)\n", flops / 1e6);
    if let Some(axis) = o.ab {
        let [(a, ..), (b, ..)] = ab_arms(axis, &TrainConfig::default());
        println!("--ab {axis:?}: per case one untimed run of each arm, then {} rounds alternating A B, B A, ...; B/A is the geometric mean of the per-round ratios with its 95% t interval", o.repeats);
        println!("| case | A: {a} samples/s | B: {b} samples/s | B/A | 95% interval | rounds |\n|---|---:|---:|---:|---:|---:|");
    } else if CASES.iter().any(|c| wanted(c.0)) {
        println!("| case | model | method | rows per table | cap | samples/s | range | MLP GFLOP/s | of GEMM peak |\n|---|---|---|---:|---:|---:|---:|---:|---:|");
    }
    Ok(())
}

/// The cases that are not a training run: clustering, ingest, the step's products.
fn other_cases(
    o: &BenchOptions,
    dlrm: &DlrmConfig,
    cfg: &TrainConfig,
    threads: usize,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<()> {
    if wanted("cluster-kaggle") {
        let options = match &o.cluster_options {
            Some(s) => {
                serde_json::from_str(s).map_err(|e| anyhow::anyhow!("--cluster-options: not a JSON object: {e}"))?
            }
            None => json!({"n_chunks": 4}),
        };
        cluster_kaggle(o.cluster_rows, options)?;
    }
    if wanted("ingest") {
        ingest(o, dlrm, cfg)?;
    }
    if wanted("gemm") {
        gemm_shapes(o, dlrm, threads)?;
    }
    Ok(())
}

/// Every matrix product of one DLRM step at `--batch`, through the backend's matmul (as training
/// calls it) and through the `gemm` crate directly on 1 and on all threads: GFLOP/s per shape
/// (median over `--repeats`, min-max), the fastest marked, and the step's GEMM time at each.
fn gemm_shapes(o: &BenchOptions, dlrm: &DlrmConfig, threads: usize) -> Result<()> {
    use cqr_models::bench::{dlrm_step_gemms, gemm_backend_gflops, gemm_direct_gflops};
    let device = &o.backend.device()?;
    let reps = o.repeats.max(3);
    println!("\ngemm: the matrix products of one DLRM `{}` step at batch {} (GFLOP/s, median of {reps} [min-max]; * = fastest)", o.preset, o.batch);
    println!("| layer | pass | m x k x n | backend matmul | gemm, 1 thread | gemm, {threads} threads |\n|---|---|---|---:|---:|---:|");
    let mut time = [0.0f64; 3];
    let mut best_time = 0.0;
    for s in dlrm_step_gemms(dlrm, o.batch, 26) {
        let r = [
            gemm_backend_gflops(device, &s, reps),
            gemm_direct_gflops(&s, 1, reps),
            gemm_direct_gflops(&s, threads, reps),
        ];
        let best = (0..3).max_by(|&a, &b| r[a].0.total_cmp(&r[b].0)).unwrap_or(0);
        let cell =
            |i: usize| format!("{:.1} [{:.0}-{:.0}]{}", r[i].0, r[i].1, r[i].2, if i == best { " *" } else { "" });
        println!(
            "| {} | {} | {} x {} x {} | {} | {} | {} |",
            s.layer,
            s.pass,
            s.m,
            s.k,
            s.n,
            cell(0),
            cell(1),
            cell(2)
        );
        let gflop = s.flops() / 1e9;
        (0..3).for_each(|i| time[i] += gflop / r[i].0);
        best_time += gflop / r[best].0;
    }
    println!(
        "step GEMM time: backend {:.2} ms, gemm 1 thread {:.2} ms, gemm {threads} threads {:.2} ms, fastest per shape {:.2} ms",
        time[0] * 1e3, time[1] * 1e3, time[2] * 1e3, best_time * 1e3
    );
    Ok(())
}

/// What `--ab` alternates within one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbAxis {
    /// A: f32 MLPs, B: bf16 MLPs (fused kernels both).
    Precision,
    /// A: burn's op graph, B: the fused kernels (f32 both).
    Kernels,
}

/// The arms of `axis`: name, training config, and the kernels to force (`cqr_models::fused::force_kernels`).
fn ab_arms(axis: AbAxis, cfg: &TrainConfig) -> [(&'static str, TrainConfig, Option<bool>); 2] {
    match axis {
        AbAxis::Precision => [
            ("f32", TrainConfig { precision: Precision::F32, ..cfg.clone() }, None),
            ("bf16", TrainConfig { precision: Precision::Bf16, ..cfg.clone() }, None),
        ],
        AbAxis::Kernels => [
            ("burn", TrainConfig { precision: Precision::F32, ..cfg.clone() }, Some(false)),
            ("fused", TrainConfig { precision: Precision::F32, ..cfg.clone() }, Some(true)),
        ],
    }
}

/// The model and random data of a throughput case. GMF: MovieLens-1M's shape (6,040 users,
/// 3,706 items, dim 32) and 10x the steps (a GMF step is ~100x cheaper than a DLRM step, and 20
/// steps are too short to time).
fn case_data(o: &BenchOptions, model: &str, vocab: usize, dlrm: &DlrmConfig) -> (ModelConfig, cqr_data::Dataset) {
    if model == "gmf" {
        (ModelConfig::Gmf { dim: 32 }, random_gmf_dataset(o.batch * o.steps * 10, 6040, 3706, 7))
    } else {
        (ModelConfig::Dlrm(dlrm.clone()), random_dataset(o.batch * o.steps, 26, vocab, 7))
    }
}

/// A paired comparison of the two arms of `axis` in this process: one untimed run of each, then
/// `rounds` rounds in alternating order (A B, B A, ...), so that a drift of the machine's speed
/// hits both arms alike; prints one table row.
fn ab_case(
    name: &str,
    axis: AbAxis,
    rounds: usize,
    mut run: impl FnMut(&TrainConfig) -> Result<f64, cqr_models::TrainError>,
    cfg: &TrainConfig,
) -> Result<()> {
    let arms = ab_arms(axis, cfg);
    let mut one = |arm: usize| {
        cqr_models::fused::force_kernels(arms[arm].2);
        let r = run(&arms[arm].1);
        cqr_models::fused::force_kernels(None);
        r
    };
    one(0)?;
    one(1)?;
    let mut sps = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for arm in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            sps[arm].push(one(arm)?);
        }
    }
    let (ratio, lo, hi) = ab_ratio(&sps[0], &sps[1]);
    println!(
        "| {name} | {:.0} | {:.0} | {ratio:.3} | {lo:.3}-{hi:.3} | {rounds} |",
        median_range(&sps[0]).0,
        median_range(&sps[1]).0
    );
    Ok(())
}

/// Geometric mean of the per-round ratios `b_i / a_i` and its 95% t interval (on the log ratios).
pub fn ab_ratio(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let logs: Vec<f64> = a.iter().zip(b).map(|(x, y)| (y / x).ln()).collect();
    let i = crate::paired::t_interval(&logs);
    (i.mean.exp(), i.lo.exp(), i.hi.exp())
}

/// One untimed warm-up run, then `repeats` timed ones (samples/s each).
fn repeated(repeats: usize, mut run: impl FnMut() -> Result<f64, cqr_models::TrainError>) -> Result<Vec<f64>> {
    run()?;
    Ok((0..repeats).map(|_| run()).collect::<Result<Vec<_>, _>>()?)
}

/// Median (the mean of the middle two for an even count), minimum and maximum.
pub fn median_range(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    (median, s[0], s[n - 1])
}

/// Raw-TSV ingest: writes `ingest_rows` lines of planted Criteo TSV to a temporary directory,
/// preprocesses them (vocabulary pass, encode pass) into the binary column cache twice, and trains
/// `steps` steps of hashing (cap 3,200) from the memory-mapped cache and from RAM, alternating.
fn ingest(o: &BenchOptions, dlrm: &DlrmConfig, cfg: &TrainConfig) -> Result<()> {
    use cqr_data::preprocess::load_tabular_into;
    use cqr_data::{cache, PreprocessOptions, RowSink, Storage, TabularFormat, TabularSource};
    let dir = tempfile_dir()?;
    let tsv = dir.join("day.tsv");
    let t0 = std::time::Instant::now();
    let bytes = cqr_data::synthetic::write_criteo_tsv(&tsv, o.ingest_rows, 1_000_000, 1)?;
    let mb = bytes as f64 / 1e6;
    println!("\ningest: {} rows of Criteo TSV, {mb:.0} MB (written in {:.1} s; the file is in the page cache, so this times parsing and encoding, not the disk)", o.ingest_rows, t0.elapsed().as_secs_f64());
    let src = TabularSource { format: TabularFormat::Criteo, train: vec![tsv.clone()], test: None };
    let opts = PreprocessOptions::default();
    let out = dir.join("cache.cqrds");
    for rep in 0..2 {
        let _ = std::fs::remove_dir_all(&out);
        let t = std::time::Instant::now();
        let ds = load_tabular_into(&src, &opts, RowSink::files(&out)?)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "ingest run {}: {:.1} s, {:.0} MB/s of raw TSV, {:.0} rows/s ({} rows, 26 vocabularies of {} ids in all)",
            rep + 1,
            s,
            mb / s,
            ds.n_rows() as f64 / s,
            ds.n_rows(),
            ds.cardinalities.iter().sum::<usize>()
        );
    }
    let spec = EmbeddingSpec {
        method: "hashing".into(),
        budget: 3200,
        options: serde_json::Value::Null,
        init_scale: 0.05,
        quantize: None,
        dense_under_cap: true,
    };
    let model = ModelConfig::Dlrm(dlrm.clone());
    let tc = TrainConfig { shuffle: cqr_models::Shuffle::Blocks { block_rows: 65_536, window: 8 }, ..cfg.clone() };
    for rep in 0..2 {
        for storage in [Storage::Mapped, Storage::Memory] {
            let mut ds = cache::open(&out, storage)?;
            // Train on the first `steps` batches' worth of rows and evaluate on 2,048 more (the
            // rest stays unread).
            let n = (o.batch * o.steps).min(ds.splits.train.len() - 4096);
            ds.splits = cqr_data::Splits { train: 0..n, val: n..n + 2048, test: n + 2048..n + 4096 };
            let sps = throughput(&model, &spec, &ds, &tc)?;
            println!(
                "train from {:<6} (repeat {}): {sps:.0} samples/s",
                format!("{storage:?}").to_lowercase(),
                rep + 1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("cqr-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// One CQR cluster step over 26 tables with the full Criteo Kaggle cardinalities (capped at 10M,
/// as `synthetic_criteo` with `max_cardinality: 10000000`): dim 16, 4 chunks, cap 131,072
/// parameters per table (4,096 centroids per column), after `rows` rows of Zipf(1.05) ids.
fn cluster_kaggle(rows: usize, options: serde_json::Value) -> Result<()> {
    let cards: Vec<usize> = KAGGLE_CARDINALITIES.iter().map(|&c| c.min(10_000_000)).collect();
    let r = cluster_step(&cards, 16, 131_072, rows, 1.05, options.clone(), 0)?;
    println!(
        "\ncluster-kaggle: one CQR cluster step, {} tables clustered ({} ids in all, {} seen in {rows} rows of Zipf(1.05) ids), cap 131072, options {options}: {:.1} s (marking seen ids: {:.1} s)",
        r.cqr_tables, r.total_ids, r.seen_ids, r.cluster_s, r.touch_s
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median_range;

    #[test]
    fn ab_ratio_is_the_geometric_mean_of_round_ratios() {
        let (r, lo, hi) = super::ab_ratio(&[100.0, 200.0, 50.0], &[110.0, 220.0, 55.0]);
        assert!((r - 1.1).abs() < 1e-12 && (lo - 1.1).abs() < 1e-12 && (hi - 1.1).abs() < 1e-12, "{r} {lo} {hi}");
        // Ratios 2 and 0.5: geometric mean 1, a wide interval around it.
        let (r, lo, hi) = super::ab_ratio(&[1.0, 2.0], &[2.0, 1.0]);
        assert!((r - 1.0).abs() < 1e-12 && lo < 0.01 && hi > 100.0, "{r} {lo} {hi}");
    }

    #[test]
    fn median_and_range_of_odd_and_even_counts() {
        assert_eq!(median_range(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_range(&[4.0, 1.0, 3.0, 2.0]), (2.5, 1.0, 4.0));
        assert_eq!(median_range(&[7.0]), (7.0, 7.0, 7.0));
    }
}
