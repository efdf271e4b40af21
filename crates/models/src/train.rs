//! One training loop for every model and embedding method.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdaGradConfig, AdamConfig, AdamWConfig, GradientsParams, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use cqr_data::metrics::{auc, bce_with_logits as bce_host};
use cqr_data::{Dataset, SkipReport, TeacherScore};
use cqr_methods::{Accounting, EmbeddingMethod, RowOptimizer};

use crate::net::{bce_with_logits, gmf_forward, Dlrm, DlrmConfig};
use crate::tables::{EmbeddingSpec, EmbeddingTables, TableRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adam,
    Adamw,
    Adagrad,
    Sgd,
}

/// Which burn device runs the MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// burn's pure-Rust CPU backend.
    #[default]
    Flex,
    /// burn's wgpu backend (build with `--features wgpu`).
    Wgpu,
}

impl Backend {
    pub fn device(self) -> Result<Device, TrainError> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => Err(TrainError::Config("backend wgpu needs a build with `--features wgpu`".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub optimizer: OptimizerKind,
    /// Learning rate of the MLPs.
    pub lr: f64,
    /// Learning rate of the embedding tables (default: `lr`).
    pub embedding_lr: Option<f64>,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    /// Also evaluate every this many steps (besides each epoch end).
    pub eval_every_steps: Option<usize>,
    /// Stop after this many evaluations without a better validation BCE.
    pub early_stopping_patience: Option<usize>,
    pub eval_batch_size: usize,
    pub backend: Backend,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            embedding_lr: None,
            batch_size: 256,
            epochs: 2,
            seed: 0,
            eval_every_steps: None,
            early_stopping_patience: None,
            eval_batch_size: 8192,
            backend: Backend::Flex,
            progress: false,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |s: String| Err(TrainError::Config(s));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if let Some(l) = self.embedding_lr {
            if !(l.is_finite() && l > 0.0) {
                return bad(format!("embedding_lr must be positive, got {l}"));
            }
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch sizes must be >= 1".into());
        }
        if self.epochs == 0 {
            return bad("epochs must be >= 1".into());
        }
        if self.eval_every_steps == Some(0) {
            return bad("eval_every_steps must be >= 1".into());
        }
        Ok(())
    }

    /// The row optimizer matching the MLP optimizer: Adam/AdamW -> lazy Adam (as torch's
    /// SparseAdam), Adagrad -> element-wise Adagrad, SGD -> SGD.
    pub fn row_optimizer(&self) -> RowOptimizer {
        let lr = self.embedding_lr.unwrap_or(self.lr) as f32;
        match self.optimizer {
            OptimizerKind::Adam | OptimizerKind::Adamw => RowOptimizer::LazyAdam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            OptimizerKind::Adagrad => RowOptimizer::Adagrad { lr, eps: 1e-8 },
            OptimizerKind::Sgd => RowOptimizer::Sgd { lr },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum ModelConfig {
    Dlrm(DlrmConfig),
    Gmf { dim: usize },
}

impl ModelConfig {
    pub fn dim(&self) -> usize {
        match self {
            ModelConfig::Dlrm(c) => c.dim,
            ModelConfig::Gmf { dim } => *dim,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Method(#[from] cqr_methods::MethodError),
    #[error("non-finite training loss {loss} at epoch {epoch}, step {step} (lower the learning rate?)")]
    NonFinite { epoch: usize, step: usize, loss: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Scores {
    pub val_bce: f64,
    pub val_auc: f64,
    pub test_bce: f64,
    pub test_auc: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    /// 0-based epoch; `step` counts optimizer steps since the start.
    pub epoch: usize,
    pub step: usize,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    pub scores: Scores,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Timings {
    pub train_s: f64,
    pub cluster_s: f64,
    pub compress_s: f64,
    pub eval_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub evals: Vec<EvalPoint>,
    /// The evaluation with the lowest validation BCE.
    pub best: EvalPoint,
    /// PQ/RQ: the scores of the compressed model (compressed from the best validation evaluation).
    pub compressed: Option<Scores>,
    /// What a summary reports: the compressed scores for PQ/RQ, else the best evaluation's.
    pub reported: Scores,
    /// Tables as trained (PQ/RQ: the dense tables they trained).
    pub tables_train: Vec<TableRecord>,
    /// Tables at the end (PQ/RQ: compressed).
    pub tables_final: Vec<TableRecord>,
    pub total_train: Accounting,
    pub total_final: Accounting,
    pub mlp_params: u64,
    pub timings: Timings,
    pub train_samples_per_s: f64,
    /// Peak resident set size of the process during this run (VmHWM, reset at the start of the
    /// run; includes the dataset in memory), bytes; 0 where unavailable.
    pub peak_rss_bytes: u64,
    pub hook_log: Vec<String>,
    pub teacher: Option<TeacherScore>,
    pub skipped: SkipReport,
}

/// Resets the process's peak-RSS counter (Linux: `5` in /proc/self/clear_refs), so the peak
/// read after a run is that run's, not an earlier one's in the same process.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS of this process from /proc/self/status (Linux); 0 elsewhere.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[derive(Clone)]
enum Net {
    Dlrm(Dlrm),
    Gmf,
}

impl Net {
    fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        match self {
            Net::Dlrm(m) => m.forward(dense, emb),
            Net::Gmf => gmf_forward(emb),
        }
    }
    fn valid(&self) -> Net {
        match self {
            Net::Dlrm(m) => Net::Dlrm(m.valid()),
            Net::Gmf => Net::Gmf,
        }
    }
    fn num_params(&self) -> u64 {
        match self {
            Net::Dlrm(m) => m.num_params() as u64,
            Net::Gmf => 0,
        }
    }
}

/// Reusable host buffers for one batch.
#[derive(Default)]
struct Batch {
    dense: Vec<f32>,
    cats: Vec<u32>,
    labels: Vec<f32>,
    emb: Vec<f32>,
}

impl Batch {
    fn fill(&mut self, ds: &Dataset, rows: &[usize]) {
        self.dense.clear();
        self.cats.clear();
        self.labels.clear();
        for &r in rows {
            self.dense.extend_from_slice(ds.dense_row(r));
            self.cats.extend_from_slice(ds.cat_row(r));
            self.labels.push(ds.labels[r]);
        }
        if ds.n_dense() == 0 {
            // A placeholder column: models without dense features ignore it.
            self.dense.resize(rows.len(), 0.0);
        }
    }
}

/// Trains `model` with embedding `spec` on `ds` and evaluates it.
pub fn train(ds: &Dataset, model: &ModelConfig, spec: &EmbeddingSpec, cfg: &TrainConfig) -> Result<RunResult, TrainError> {
    cfg.validate()?;
    ds.validate().map_err(TrainError::Config)?;
    if ds.splits.train.is_empty() || ds.splits.val.is_empty() || ds.splits.test.is_empty() {
        return Err(TrainError::Config(format!("dataset {} needs non-empty train, val and test splits ({:?})", ds.name, ds.splits)));
    }
    reset_peak_rss();
    let dim = model.dim();
    let n_dense = ds.n_dense();
    let dense_w = n_dense.max(1);
    let base = cfg.backend.device()?;
    let device = base.clone().autodiff();
    let mut net = match model {
        ModelConfig::Dlrm(c) => {
            c.validate(n_dense).map_err(TrainError::Config)?;
            Net::Dlrm(Dlrm::new(c, n_dense, ds.n_cat(), cfg.seed, &device))
        }
        ModelConfig::Gmf { dim } => {
            if ds.n_cat() != 2 || *dim == 0 {
                return Err(TrainError::Config(format!("gmf needs a (user, item) dataset and dim >= 1; {} has {} columns", ds.name, ds.n_cat())));
            }
            Net::Gmf
        }
    };
    let mut tables = EmbeddingTables::new(spec, &ds.cat_names, &ds.cardinalities, dim, cfg.row_optimizer(), cfg.epochs, cfg.seed)?;
    let mut optim = match cfg.optimizer {
        OptimizerKind::Adam => AdamConfig::new().init(),
        OptimizerKind::Adamw => AdamWConfig::new().init(),
        OptimizerKind::Adagrad => AdaGradConfig::new().init(),
        OptimizerKind::Sgd => SgdConfig::new().init(),
    };
    let mlp_params = net.num_params();
    let mut timings = Timings::default();
    let mut evals: Vec<EvalPoint> = vec![];
    let mut hook_log = vec![];
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut order: Vec<usize> = ds.splits.train.clone().collect();
    let mut batch = Batch::default();
    let (mut step, mut samples) = (0usize, 0usize);
    let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
    let mut since_best = 0usize;
    let mut stop = false;
    let n_batches = order.len().div_ceil(cfg.batch_size);
    // Post-training methods (PQ, RQ) compress the model of the best validation evaluation, not
    // the last one: CTR models often overfit after one epoch, and compressing an overfit model
    // would charge the method for it. The snapshot costs one copy of the (dense) tables.
    let post_training = tables.methods.iter().any(|m| cqr_methods::registry::is_post_training(m.name()));
    let mut snapshot: Option<(Net, Vec<Vec<Vec<f32>>>)> = None;
    let t_count = ds.n_cat();

    let evaluate = |net: &Net, tables: &mut EmbeddingTables, timings: &mut Timings| -> Scores {
        let t0 = Instant::now();
        let eval_net = net.valid();
        let mut part = |range: std::ops::Range<usize>| -> (f64, f64) {
            let rows: Vec<usize> = range.collect();
            let mut logits = Vec::with_capacity(rows.len());
            let mut b = Batch::default();
            for chunk in rows.chunks(cfg.eval_batch_size) {
                b.fill(ds, chunk);
                tables.forward(&b.cats, &mut b.emb);
                let n = chunk.len();
                let dense = Tensor::<2>::from_data(TensorData::new(b.dense.clone(), [n, dense_w]), &base);
                let emb = Tensor::<3>::from_data(TensorData::new(std::mem::take(&mut b.emb), [t_count, n, dim]), &base);
                let out = eval_net.forward(dense, emb);
                logits.extend(out.into_data().try_into_vec::<f32>().expect("f32 logits"));
            }
            let labels: Vec<f32> = rows.iter().map(|&r| ds.labels[r]).collect();
            (bce_host(&logits, &labels), auc(&logits, &labels))
        };
        let (val_bce, val_auc) = part(ds.splits.val.clone());
        let (test_bce, test_auc) = part(ds.splits.test.clone());
        timings.eval_s += t0.elapsed().as_secs_f64();
        Scores { val_bce, val_auc, test_bce, test_auc }
    };

    'epochs: for epoch in 0..cfg.epochs {
        shuffle(&mut order, &mut rng);
        let bar = progress_bar(cfg.progress, n_batches as u64, epoch);
        for chunk in order.chunks(cfg.batch_size) {
            let t0 = Instant::now();
            let b = chunk.len();
            batch.fill(ds, chunk);
            tables.forward(&batch.cats, &mut batch.emb);
            let dense = Tensor::<2>::from_data(TensorData::new(batch.dense.clone(), [b, dense_w]), &device);
            let emb = Tensor::<3>::from_data(TensorData::new(std::mem::take(&mut batch.emb), [t_count, b, dim]), &device).require_grad();
            let labels = Tensor::<2>::from_data(TensorData::new(batch.labels.clone(), [b, 1]), &device);
            let loss = bce_with_logits(net.forward(dense, emb.clone()), labels);
            let loss_value: f32 = loss.clone().into_scalar();
            if !loss_value.is_finite() {
                return Err(TrainError::NonFinite { epoch, step, loss: loss_value as f64 });
            }
            let mut grads = loss.backward();
            let emb_grad = emb.grad_remove(&mut grads).map(|g| g.into_data().try_into_vec::<f32>().expect("f32 gradient"));
            if let Net::Dlrm(m) = net {
                let gp = GradientsParams::from_grads(grads, &m);
                net = Net::Dlrm(optim.step(cfg.lr, m, gp));
            }
            if let Some(g) = emb_grad {
                tables.backward(&g);
            }
            step += 1;
            samples += b;
            loss_sum += loss_value as f64 * b as f64;
            loss_n += b;
            timings.train_s += t0.elapsed().as_secs_f64();
            bar.inc(1);
            if cfg.eval_every_steps.is_some_and(|k| step % k == 0) {
                let scores = evaluate(&net, &mut tables, &mut timings);
                push_eval(&mut evals, epoch, step, &mut loss_sum, &mut loss_n, scores, &mut since_best);
                if post_training && since_best == 0 {
                    snapshot = Some((net.clone(), tables.snapshot()));
                }
                if cfg.early_stopping_patience.is_some_and(|p| since_best > p) {
                    bar.finish_and_clear();
                    break 'epochs;
                }
            }
        }
        bar.finish_and_clear();
        let scores = evaluate(&net, &mut tables, &mut timings);
        push_eval(&mut evals, epoch, step, &mut loss_sum, &mut loss_n, scores, &mut since_best);
        if post_training && since_best == 0 {
            snapshot = Some((net.clone(), tables.snapshot()));
        }
        if cfg.early_stopping_patience.is_some_and(|p| since_best > p) {
            stop = true;
        }
        // Lifecycle: CQR clusters here (not after the last epoch).
        if epoch + 1 < cfg.epochs && !stop {
            let t0 = Instant::now();
            let log = tables.hook(|m: &mut dyn EmbeddingMethod| m.on_epoch_end(epoch))?;
            timings.cluster_s += t0.elapsed().as_secs_f64();
            hook_log.extend(log.into_iter().map(|l| format!("epoch {epoch}: {l}")));
        }
        if stop {
            break;
        }
    }
    if let Some((best_net, weights)) = snapshot.take() {
        net = best_net;
        tables.restore(&weights);
    }
    let tables_train = tables.records();
    let total_train = tables.total();
    // PQ/RQ compress here; other methods do nothing.
    let t0 = Instant::now();
    let log = tables.hook(|m: &mut dyn EmbeddingMethod| m.on_train_end())?;
    timings.compress_s += t0.elapsed().as_secs_f64();
    let compressed = if log.is_empty() {
        None
    } else {
        hook_log.extend(log);
        Some(evaluate(&net, &mut tables, &mut timings))
    };
    let best = *evals
        .iter()
        .min_by(|a, b| a.scores.val_bce.total_cmp(&b.scores.val_bce))
        .expect("at least one evaluation");
    Ok(RunResult {
        reported: compressed.unwrap_or(best.scores),
        best,
        compressed,
        evals,
        tables_train,
        tables_final: tables.records(),
        total_train,
        total_final: tables.total(),
        mlp_params,
        train_samples_per_s: samples as f64 / timings.train_s.max(1e-9),
        timings,
        peak_rss_bytes: peak_rss_bytes(),
        hook_log,
        teacher: ds.teacher,
        skipped: ds.skipped.clone(),
    })
}

fn push_eval(evals: &mut Vec<EvalPoint>, epoch: usize, step: usize, loss_sum: &mut f64, loss_n: &mut usize, scores: Scores, since_best: &mut usize) {
    let best = evals.iter().map(|e| e.scores.val_bce).fold(f64::INFINITY, f64::min);
    *since_best = if scores.val_bce < best { 0 } else { *since_best + 1 };
    let train_loss = if *loss_n > 0 { *loss_sum / *loss_n as f64 } else { f64::NAN };
    evals.push(EvalPoint { epoch, step, train_loss, scores });
    *loss_sum = 0.0;
    *loss_n = 0;
}

fn shuffle(v: &mut [usize], rng: &mut ChaCha8Rng) {
    use rand::Rng;
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

fn progress_bar(enabled: bool, len: u64, epoch: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // indicatif draws to stderr and stays quiet when it is not a terminal.
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message(epoch.to_string());
    bar
}
