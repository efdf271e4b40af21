//! One training loop for every model and embedding method.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdaGradConfig, AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use cqr_data::metrics::{auc, bce_term, bce_with_logits as bce_host};
use cqr_data::{Dataset, SkipReport, TeacherScore};
use cqr_methods::{Accounting, EmbeddingMethod, RowOptimizer};

use crate::dcn::{Dcn, DcnConfig};
use crate::deepfm::{DeepFm, DeepFmConfig};
use crate::fused::Precision;
use crate::net::{gmf_forward, loss, Dlrm, DlrmConfig};
use crate::wdl::{Wdl, WdlConfig};
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
    /// Or: evaluate about this many times an epoch: `eval_every_steps` becomes
    /// `ceil(steps_per_epoch / k)` (counted in global steps, as `eval_every_steps` is), so that
    /// grids over row counts evaluate (and step-scheduled methods such as CQR's
    /// `cluster_at_evaluation` act) as often per epoch at every size. Exclusive with
    /// `eval_every_steps`. Not serialised when unset, so cell ids of
    /// configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evals_per_epoch: Option<usize>,
    /// Stop after this many evaluations without a better validation BCE.
    pub early_stopping_patience: Option<usize>,
    pub eval_batch_size: usize,
    /// AdamW's decoupled weight decay, applied to the MLP and to the embedding rows a step
    /// touches (default 0.01, torch's). Only with `optimizer: adamw`. Not serialised when unset,
    /// so cell ids of configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    pub backend: Backend,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
    /// How training rows are ordered each epoch (default: a full shuffle). Not serialised when
    /// full, so cell ids of configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "Shuffle::is_full")]
    pub shuffle: Shuffle,
    /// The arithmetic of the MLPs' matrix products: `f32` (default) or `bf16` (bf16 operands,
    /// f32 accumulation and master weights; see [`Precision`]). bf16 needs the fused CPU
    /// kernels (backend flex, not `CQR_KERNELS=burn`) and a model with an MLP. Not serialised
    /// when f32, so cell ids of configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Stop at the first evaluation at or after this fraction of the run's steps (in (0, 1)):
    /// the run is the exact prefix of the full one (same schedule, same batches), so a tuner's
    /// successive halving can compare trials part-way. Not serialised when unset, so cell ids of
    /// configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_after: Option<f64>,
}

/// The order of training rows within an epoch. Both are deterministic per seed and independent
/// of where the data lives (memory or memory-mapped), so storage never changes results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, try_from = "ShuffleRepr")]
pub enum Shuffle {
    /// A uniform permutation of all training rows each epoch (each epoch permutes the previous
    /// epoch's order). Random access over all the data: for data that fits in memory.
    #[default]
    Full,
    /// Out of core: the training rows are cut into consecutive blocks of `block_rows`; each epoch
    /// permutes the blocks, takes them `window` at a time, and permutes the rows of each window
    /// (the rows left over from the previous window, fewer than a batch, go first). Reads touch
    /// `window` blocks at a time, so a memory-mapped dataset keeps about two windows resident;
    /// pages of finished windows are given back. Rows sharing a batch come from at most `window`
    /// (+1) blocks: make `window * block_rows` large against the batch size.
    Blocks { block_rows: usize, window: usize },
}

/// What YAML gives: `full`, or `{ blocks: { block_rows, window } }` (serde_yaml's value
/// deserializer takes enum variants only as tags, so the map form is read through this).
#[derive(Deserialize)]
#[serde(untagged)]
enum ShuffleRepr {
    Name(String),
    Blocks { blocks: BlocksRepr },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlocksRepr {
    block_rows: usize,
    window: usize,
}

impl TryFrom<ShuffleRepr> for Shuffle {
    type Error = String;
    fn try_from(r: ShuffleRepr) -> Result<Self, String> {
        match r {
            ShuffleRepr::Name(n) if n == "full" => Ok(Shuffle::Full),
            ShuffleRepr::Name(n) => Err(format!("unknown shuffle `{n}` (full, or {{ blocks: {{ block_rows, window }} }})")),
            ShuffleRepr::Blocks { blocks: BlocksRepr { block_rows, window } } => Ok(Shuffle::Blocks { block_rows, window }),
        }
    }
}

impl Shuffle {
    pub fn is_full(&self) -> bool {
        *self == Shuffle::Full
    }
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
            evals_per_epoch: None,
            early_stopping_patience: None,
            eval_batch_size: 8192,
            weight_decay: None,
            backend: Backend::Flex,
            progress: false,
            shuffle: Shuffle::Full,
            precision: Precision::F32,
            stop_after: None,
        }
    }
}

impl TrainConfig {
    /// The steps between in-epoch evaluations, given the steps of an epoch: `eval_every_steps`,
    /// or `evals_per_epoch` evaluations spread evenly (at least one step apart).
    pub fn eval_interval(&self, steps_per_epoch: usize) -> Option<usize> {
        self.eval_every_steps.or(self.evals_per_epoch.map(|k| steps_per_epoch.div_ceil(k).max(1)))
    }

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
        if self.eval_every_steps == Some(0) || self.evals_per_epoch == Some(0) {
            return bad("eval_every_steps and evals_per_epoch must be >= 1".into());
        }
        if self.eval_every_steps.is_some() && self.evals_per_epoch.is_some() {
            return bad("give eval_every_steps or evals_per_epoch, not both".into());
        }
        if let Shuffle::Blocks { block_rows, window } = self.shuffle {
            if block_rows == 0 || window == 0 {
                return bad(format!("shuffle: blocks needs block_rows >= 1 and window >= 1 (got {block_rows}, {window})"));
            }
        }
        if !self.precision.is_f32() && self.backend != Backend::Flex {
            return bad(format!("precision: bf16 runs on the fused CPU kernels only (backend flex), not on {:?}", self.backend));
        }
        if let Some(f) = self.stop_after {
            if !(f > 0.0 && f < 1.0) {
                return bad(format!("stop_after is a fraction of the run's steps in (0, 1), got {f}"));
            }
        }
        if let Some(wd) = self.weight_decay {
            if self.optimizer != OptimizerKind::Adamw {
                return bad(format!("weight_decay is AdamW's decoupled decay: it needs optimizer: adamw (got {:?})", self.optimizer));
            }
            if !(wd.is_finite() && wd >= 0.0) {
                return bad(format!("weight_decay must be >= 0, got {wd}"));
            }
        }
        Ok(())
    }

    /// AdamW's decay (0.01 unless set); 0 for the other optimizers.
    pub fn effective_weight_decay(&self) -> f64 {
        match self.optimizer {
            OptimizerKind::Adamw => self.weight_decay.unwrap_or(0.01),
            _ => 0.0,
        }
    }

    /// The row optimizer matching the MLP optimizer: Adam/AdamW -> lazy Adam (as torch's
    /// SparseAdam; AdamW adds the decoupled decay to the rows a step touches), Adagrad ->
    /// element-wise Adagrad, SGD -> SGD.
    pub fn row_optimizer(&self) -> RowOptimizer {
        let lr = self.embedding_lr.unwrap_or(self.lr) as f32;
        match self.optimizer {
            OptimizerKind::Adam | OptimizerKind::Adamw => RowOptimizer::LazyAdam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: self.effective_weight_decay() as f32 },
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
    Dcn(DcnConfig),
    Deepfm(DeepFmConfig),
    Wdl(WdlConfig),
}

impl ModelConfig {
    /// Whether the model can train at `precision` (bf16 applies to MLPs: GMF has none).
    pub fn check_precision(&self, precision: Precision) -> Result<(), String> {
        match self {
            ModelConfig::Gmf { .. } if !precision.is_f32() => Err("precision: bf16 applies to the MLPs' matrix products; gmf has no MLP".into()),
            _ => Ok(()),
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            ModelConfig::Dlrm(c) => c.dim,
            ModelConfig::Gmf { dim } => *dim,
            ModelConfig::Dcn(c) => c.dim,
            ModelConfig::Deepfm(c) => c.dim,
            ModelConfig::Wdl(c) => c.dim,
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
    /// Mean training loss since the previous evaluation; NaN when no step ran since (an
    /// in-epoch evaluation on an epoch's last step is followed by the epoch-end one). JSON has
    /// no NaN: it is written as `null` and read back as NaN.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    pub scores: Scores,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
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
    /// The highest validation AUC over all evaluations (what the CQR authors' MovieLens script
    /// reports), whichever evaluation it came from; PQ/RQ: the compressed model's. NaN when read
    /// from a record written before the field existed: [`RunResult::best_val_auc`] derives it.
    #[serde(default = "nan", rename = "best_val_auc")]
    pub stored_best_val_auc: f64,
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
    /// Click rate of the training split: normalized entropy is test BCE over its entropy.
    /// (0 in records written before it existed.)
    #[serde(default)]
    pub train_click_rate: f64,
    /// The reported test BCE split by how often the row's id in the largest table occurs in the
    /// training split (see [`FrequencyBuckets`]); `None` in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_bce_by_frequency: Option<FrequencyBce>,
}

fn nan() -> f64 {
    f64::NAN
}

impl RunResult {
    /// The best validation AUC as training computed it; for records that predate the field,
    /// the same rule applied to what they stored (the compressed model's AUC where there is one,
    /// else the highest over the evaluations, all of which were within budget then).
    pub fn best_val_auc(&self) -> f64 {
        if !self.stored_best_val_auc.is_nan() {
            return self.stored_best_val_auc;
        }
        match self.compressed {
            Some(c) => c.val_auc,
            None => self.evals.iter().map(|e| e.scores.val_auc).fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Training-count bounds of the frequency buckets: head ids occur in at least
/// `FREQ_BOUNDS[1]` training rows, torso ids in `FREQ_BOUNDS[0]..FREQ_BOUNDS[1]`, tail ids in fewer
/// than `FREQ_BOUNDS[0]` (never-seen ids included).
pub const FREQ_BOUNDS: [u32; 2] = [10, 100];

/// Test BCE of the rows in each frequency bucket (head, torso, tail) and their counts; `None`
/// for an empty bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FrequencyBce {
    pub bce: [Option<f64>; 3],
    pub rows: [u64; 3],
}

/// Row ranges of 2^16 rows covering `range`.
fn row_blocks(range: std::ops::Range<usize>) -> impl Iterator<Item = std::ops::Range<usize>> {
    (range.start..range.end).step_by(1 << 16).map(move |a| a..(a + (1 << 16)).min(range.end))
}

/// How often each id of each column in `cols` occurs in the training split (saturating at
/// u32::MAX). Out of core: one pass in blocks, each released once counted, so the pass does not
/// make the mapped arrays resident.
pub fn train_counts(ds: &Dataset, cols: &[usize]) -> Vec<Vec<u32>> {
    let mut counts: Vec<Vec<u32>> = cols.iter().map(|&c| vec![0u32; ds.cardinalities[c]]).collect();
    for block in row_blocks(ds.splits.train.clone()) {
        for r in block.clone() {
            let row = ds.cat_row(r);
            for (k, &c) in cols.iter().enumerate() {
                let id = row[c] as usize;
                counts[k][id] = counts[k][id].saturating_add(1);
            }
        }
        ds.release(block);
    }
    counts
}

/// The frequency bucket of each test row, by the training count of its id in the table with the
/// largest vocabulary (where compression bites hardest and clustering should help rare ids).
struct FrequencyBuckets {
    buckets: Vec<u8>,
}

impl FrequencyBuckets {
    /// `counts`: every column's training counts when the caller has them (methods that need
    /// counts), so the training split is not counted twice; empty otherwise.
    fn new(ds: &Dataset, counts: &[std::sync::Arc<[u32]>]) -> Self {
        let Some(col) = (0..ds.n_cat()).max_by_key(|&c| (ds.cardinalities[c], std::cmp::Reverse(c))) else { return FrequencyBuckets { buckets: vec![] } };
        let counted;
        let counts: &[u32] = match counts.get(col) {
            Some(c) => c,
            None => {
                counted = train_counts(ds, &[col]).pop().unwrap_or_default();
                &counted
            }
        };
        let bucket = |c: u32| if c >= FREQ_BOUNDS[1] { 0 } else if c >= FREQ_BOUNDS[0] { 1 } else { 2 };
        let mut buckets = Vec::with_capacity(ds.splits.test.len());
        for block in row_blocks(ds.splits.test.clone()) {
            buckets.extend(block.clone().map(|r| bucket(counts[ds.cat_row(r)[col] as usize])));
            ds.release(block);
        }
        FrequencyBuckets { buckets }
    }

    /// BCE per bucket of test-split logits, in one pass (each bucket's terms summed in row
    /// order, as `bce_with_logits` sums them).
    fn bce(&self, logits: &[f32], labels: &[f32]) -> FrequencyBce {
        let (mut sum, mut rows) = ([0.0f64; 3], [0u64; 3]);
        for ((&b, &z), &y) in self.buckets.iter().zip(logits).zip(labels) {
            sum[b as usize] += bce_term(z, y);
            rows[b as usize] += 1;
        }
        FrequencyBce { bce: std::array::from_fn(|k| (rows[k] > 0).then(|| sum[k] / rows[k] as f64)), rows }
    }
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
    Dcn(Dcn),
    DeepFm(DeepFm),
    Wdl(Wdl),
}

/// One optimizer step of a module from the gradients of a backward pass.
fn module_step<M: Module>(optim: &mut ModuleOptimizer, lr: f64, m: &M, grads: burn::tensor::Gradients) -> M {
    let gp = GradientsParams::from_grads(grads, m);
    optim.step(lr, m.clone(), gp)
}

impl Net {
    fn new(model: &ModelConfig, ds: &Dataset, seed: u64, precision: Precision, device: &Device) -> Result<Net, TrainError> {
        model.check_precision(precision).map_err(TrainError::Config)?;
        if !precision.is_f32() {
            if !crate::fused::fused_available(device) {
                let why = if crate::fused::fused_available(&Device::flex()) { "a backend other than flex" } else { "burn's op graph (CQR_KERNELS=burn)" };
                return Err(TrainError::Config(format!("precision: bf16 runs on the fused CPU kernels only (backend flex without CQR_KERNELS=burn); this run uses {why}")));
            }
        }
        let (n_dense, n_cat) = (ds.n_dense(), ds.n_cat());
        Ok(match model {
            ModelConfig::Dlrm(c) => {
                c.validate(n_dense).map_err(TrainError::Config)?;
                Net::Dlrm(Dlrm::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
            ModelConfig::Gmf { dim } => {
                if n_cat != 2 || *dim == 0 {
                    return Err(TrainError::Config(format!("gmf needs a (user, item) dataset and dim >= 1; {} has {} columns", ds.name, n_cat)));
                }
                Net::Gmf
            }
            ModelConfig::Dcn(c) => {
                c.validate().map_err(TrainError::Config)?;
                Net::Dcn(Dcn::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
            ModelConfig::Deepfm(c) => {
                c.validate("deepfm").map_err(TrainError::Config)?;
                Net::DeepFm(DeepFm::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
            ModelConfig::Wdl(c) => {
                c.validate("wdl").map_err(TrainError::Config)?;
                Net::Wdl(Wdl::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
        })
    }
    /// `dense: [batch, max(n_dense, 1)]`, `emb: [tables, batch, dim]` -> logits `[batch, 1]`.
    fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        match self {
            Net::Dlrm(m) => m.forward(dense, emb),
            Net::Gmf => gmf_forward(emb),
            Net::Dcn(m) => m.forward(dense, emb),
            Net::DeepFm(m) => m.forward(dense, emb),
            Net::Wdl(m) => m.forward(dense, emb),
        }
    }
    fn valid(&self) -> Net {
        match self {
            Net::Dlrm(m) => Net::Dlrm(m.valid()),
            Net::Gmf => Net::Gmf,
            Net::Dcn(m) => Net::Dcn(m.valid()),
            Net::DeepFm(m) => Net::DeepFm(m.valid()),
            Net::Wdl(m) => Net::Wdl(m.valid()),
        }
    }
    fn num_params(&self) -> u64 {
        (match self {
            Net::Dlrm(m) => m.num_params(),
            Net::Gmf => 0,
            Net::Dcn(m) => m.num_params(),
            Net::DeepFm(m) => m.num_params(),
            Net::Wdl(m) => m.num_params(),
        }) as u64
    }
    /// The MLP optimizer step (none for GMF, which has no dense parameters).
    fn step(&self, optim: &mut ModuleOptimizer, lr: f64, grads: burn::tensor::Gradients) -> Net {
        match self {
            Net::Dlrm(m) => Net::Dlrm(module_step(optim, lr, m, grads)),
            Net::Gmf => Net::Gmf,
            Net::Dcn(m) => Net::Dcn(module_step(optim, lr, m, grads)),
            Net::DeepFm(m) => Net::DeepFm(module_step(optim, lr, m, grads)),
            Net::Wdl(m) => Net::Wdl(module_step(optim, lr, m, grads)),
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
            self.labels.push(ds.label(r));
        }
        if ds.n_dense() == 0 {
            // A placeholder column: models without dense features ignore it.
            self.dense.resize(rows.len(), 0.0);
        }
    }
}

/// Trains `model` with embedding `spec` on `ds` and evaluates it.
///
/// Phases, each a method of [`Trainer`]: batching ([`Batch::fill`]), one optimizer step
/// ([`Trainer::step`]), evaluation ([`Trainer::evaluate`]), bookkeeping after an evaluation
/// (best-model snapshot, early stopping: [`Trainer::record`]) and the methods' lifecycle hooks
/// ([`Trainer::hook`]): `on_step` after every step but the last, `on_epoch_end` after every epoch
/// but the last, `on_train_end` once.
pub fn train(ds: &Dataset, model: &ModelConfig, spec: &EmbeddingSpec, cfg: &TrainConfig) -> Result<RunResult, TrainError> {
    cfg.validate()?;
    // A mapped dataset is not scanned (that would read all of it): its cache was checked on open.
    if ds.is_mapped() { ds.validate_shape() } else { ds.validate() }.map_err(TrainError::Config)?;
    if ds.splits.train.is_empty() || ds.splits.val.is_empty() || ds.splits.test.is_empty() {
        return Err(TrainError::Config(format!("dataset {} needs non-empty train, val and test splits ({:?})", ds.name, ds.splits)));
    }
    reset_peak_rss();
    let mut t = Trainer::new(ds, model, spec, cfg)?;
    // The batch order's only randomness: the seed (never the method), so that cells of two
    // methods with one seed see the same batches (paired comparisons rely on it).
    let mut rng = batch_rng(cfg.seed);
    let mut order = EpochOrder::new(ds, cfg.shuffle);
    let n_batches = ds.splits.train.len().div_ceil(cfg.batch_size);
    let last_step = n_batches * cfg.epochs;
    let eval_every = cfg.eval_interval(n_batches);
    // A partial run (`stop_after`) ends at its first evaluation at or past this step.
    let stop_step = cfg.stop_after.map(|f| (f * last_step as f64).ceil() as usize);
    let past_stop = |step: usize| stop_step.is_some_and(|s| step >= s);
    'epochs: for epoch in 0..cfg.epochs {
        order.start_epoch(&mut rng);
        let bar = progress_bar(cfg.progress, n_batches as u64, epoch);
        while let Some(chunk) = order.next_batch(cfg.batch_size, &mut rng) {
            t.step(chunk, epoch)?;
            bar.inc(1);
            if eval_every.is_some_and(|k| t.step % k == 0) && t.step < last_step {
                let scores = t.evaluate();
                if t.record(epoch, scores) || past_stop(t.step) {
                    bar.finish_and_clear();
                    break 'epochs;
                }
            }
            if t.step_hooks && t.step < last_step {
                let step = t.step;
                t.hook(&format!("step {step}"), |m| m.on_step(step))?;
            }
        }
        bar.finish_and_clear();
        let scores = t.evaluate();
        let stop = t.record(epoch, scores) || past_stop(t.step);
        // Lifecycle: CQR's epoch schedule clusters here (not after the last epoch).
        if epoch + 1 < cfg.epochs && !stop {
            t.hook(&format!("epoch {epoch}"), |m| m.on_epoch_end(epoch))?;
        }
        if stop {
            break;
        }
    }
    t.finish()
}

/// The random source of the batch order of a run with this seed.
fn batch_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x5eed)
}

/// Yields the training batches of each epoch in the order of a [`Shuffle`].
struct EpochOrder<'a> {
    ds: &'a Dataset,
    shuffle: Shuffle,
    /// Full: the permutation, kept across epochs. Blocks: the rows of the windows loaded so far,
    /// from `pos` on not yet used.
    rows: Vec<usize>,
    pos: usize,
    /// Blocks: this epoch's block order, the next block to load, and the blocks of the current
    /// and the previous window (released two windows later).
    blocks: Vec<std::ops::Range<usize>>,
    next_block: usize,
    live: [Vec<std::ops::Range<usize>>; 2],
}

impl<'a> EpochOrder<'a> {
    fn new(ds: &'a Dataset, shuffle: Shuffle) -> Self {
        let rows = if shuffle.is_full() { ds.splits.train.clone().collect() } else { Vec::new() };
        EpochOrder { ds, shuffle, rows, pos: 0, blocks: vec![], next_block: 0, live: [vec![], vec![]] }
    }

    fn start_epoch(&mut self, rng: &mut ChaCha8Rng) {
        self.pos = 0;
        match self.shuffle {
            Shuffle::Full => shuffle(&mut self.rows, rng),
            Shuffle::Blocks { block_rows, .. } => {
                let t = self.ds.splits.train.clone();
                let mut starts: Vec<usize> = t.clone().step_by(block_rows).collect();
                shuffle(&mut starts, rng);
                self.blocks = starts.into_iter().map(|s| s..(s + block_rows).min(t.end)).collect();
                self.next_block = 0;
                self.rows.clear();
            }
        }
    }

    /// The next batch of at most `bs` rows; `None` at the end of the epoch.
    fn next_batch(&mut self, bs: usize, rng: &mut ChaCha8Rng) -> Option<&[usize]> {
        if let Shuffle::Blocks { window, .. } = self.shuffle {
            while self.rows.len() - self.pos < bs && self.next_block < self.blocks.len() {
                self.load_window(window, rng);
            }
            if self.pos == self.rows.len() {
                for w in std::mem::take(&mut self.live) {
                    w.into_iter().for_each(|b| self.ds.release(b));
                }
            }
        }
        let start = self.pos;
        self.pos = (start + bs).min(self.rows.len());
        (self.pos > start).then(|| &self.rows[start..self.pos])
    }

    /// Appends the next `window` blocks' rows, permuted, after the unused rows; gives back the
    /// pages of the window before the previous one.
    fn load_window(&mut self, window: usize, rng: &mut ChaCha8Rng) {
        self.rows.drain(..self.pos);
        self.pos = 0;
        let carry = self.rows.len();
        let end = (self.next_block + window).min(self.blocks.len());
        let new: Vec<_> = self.blocks[self.next_block..end].to_vec();
        self.next_block = end;
        for b in &new {
            self.rows.extend(b.clone());
        }
        shuffle(&mut self.rows[carry..], rng);
        let old = std::mem::replace(&mut self.live, [Vec::new(), Vec::new()]);
        let [older, prev] = old;
        older.into_iter().for_each(|b| self.ds.release(b));
        self.live = [prev, new];
    }
}

/// The state of one training run.
struct Trainer<'a> {
    ds: &'a Dataset,
    cfg: &'a TrainConfig,
    dim: usize,
    dense_w: usize,
    base: Device,
    device: Device,
    net: Net,
    tables: EmbeddingTables,
    optim: ModuleOptimizer,
    mlp_params: u64,
    timings: Timings,
    evals: Vec<EvalPoint>,
    hook_log: Vec<String>,
    batch: Batch,
    step: usize,
    samples: usize,
    loss_sum: f64,
    loss_n: usize,
    since_best: usize,
    /// PQ/RQ compress the model of the best validation evaluation, not the last one: CTR models
    /// often overfit after one epoch, and compressing an overfit model would charge the method
    /// for it. The snapshot costs one copy of the (dense) tables.
    post_training: bool,
    /// Whether any table has a step hook (else the per-step call is skipped).
    step_hooks: bool,
    snapshot: Option<(Net, crate::tables::TablesSnapshot)>,
    /// Frequency bucket (0 head, 1 torso, 2 tail) of each test row, by its id in the largest table.
    test_buckets: FrequencyBuckets,
    /// Test BCE per frequency bucket of the last evaluation, and of each recorded one.
    last_freq: FrequencyBce,
    freq_evals: Vec<FrequencyBce>,
    /// Per evaluation: whether every table was within budget then.
    eligible: Vec<bool>,
}

fn mlp_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    match cfg.optimizer {
        OptimizerKind::Adam => AdamConfig::new().init(),
        // burn's default decay (1e-4) is replaced by ours, the same value the tables get.
        OptimizerKind::Adamw => AdamWConfig::new().with_weight_decay(cfg.effective_weight_decay() as f32).init(),
        OptimizerKind::Adagrad => AdaGradConfig::new().init(),
        OptimizerKind::Sgd => SgdConfig::new().init(),
    }
}

impl<'a> Trainer<'a> {
    fn new(ds: &'a Dataset, model: &ModelConfig, spec: &EmbeddingSpec, cfg: &'a TrainConfig) -> Result<Self, TrainError> {
        let dim = model.dim();
        let n_dense = ds.n_dense();
        let base = cfg.backend.device()?;
        let device = base.clone().autodiff();
        let net = Net::new(model, ds, cfg.seed, cfg.precision, &device)?;
        let steps_per_epoch = ds.splits.train.len().div_ceil(cfg.batch_size);
        let counts: Vec<std::sync::Arc<[u32]>> = if cqr_methods::registry::needs_counts(&spec.method) { train_counts(ds, &(0..ds.n_cat()).collect::<Vec<_>>()).into_iter().map(Into::into).collect() } else { vec![] };
        let tables = EmbeddingTables::new(spec, &ds.cat_names, &ds.cardinalities, dim, cfg.row_optimizer(), cfg.epochs, (steps_per_epoch, cfg.eval_interval(steps_per_epoch)), cfg.seed, &counts)?;
        // Post-training compression (PQ/RQ, or quantization of any method) starts from the best
        // model: it is snapshotted at each new best validation BCE.
        let post_training = spec.quantize.is_some() || tables.methods.iter().any(|m| cqr_methods::registry::is_post_training(m.name()));
        let step_hooks = tables.methods.iter().any(|m| m.uses_step_hook());
        Ok(Trainer {
            ds,
            cfg,
            dim,
            dense_w: n_dense.max(1),
            base,
            device,
            mlp_params: net.num_params(),
            net,
            tables,
            optim: mlp_optimizer(cfg),
            timings: Timings::default(),
            evals: vec![],
            hook_log: vec![],
            test_buckets: FrequencyBuckets::new(ds, &counts),
            last_freq: FrequencyBce::default(),
            freq_evals: vec![],
            eligible: vec![],
            batch: Batch::default(),
            step: 0,
            samples: 0,
            loss_sum: 0.0,
            loss_n: 0,
            since_best: 0,
            post_training,
            step_hooks,
            snapshot: None,
        })
    }

    /// One optimizer step on the training rows `rows`: gather, forward, backward, MLP step, sparse
    /// table updates.
    fn step(&mut self, rows: &[usize], epoch: usize) -> Result<(), TrainError> {
        let t0 = Instant::now();
        let (b, dim, t_count) = (rows.len(), self.dim, self.ds.n_cat());
        let device = &self.device;
        self.batch.fill(self.ds, rows);
        self.tables.forward(&self.batch.cats, &mut self.batch.emb);
        let dense = Tensor::<2>::from_data(TensorData::new(self.batch.dense.clone(), [b, self.dense_w]), device);
        let emb = Tensor::<3>::from_data(TensorData::new(std::mem::take(&mut self.batch.emb), [t_count, b, dim]), device).require_grad();
        let labels = Tensor::<2>::from_data(TensorData::new(self.batch.labels.clone(), [b, 1]), device);
        let loss = loss(self.net.forward(dense, emb.clone()), labels);
        let loss_value: f32 = loss.clone().into_scalar();
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite { epoch, step: self.step, loss: loss_value as f64 });
        }
        let mut grads = loss.backward();
        let emb_grad = emb.grad_remove(&mut grads).map(|g| g.into_data().try_into_vec::<f32>().expect("f32 gradient"));
        self.net = self.net.step(&mut self.optim, self.cfg.lr, grads);
        if let Some(g) = emb_grad {
            self.tables.backward(&g);
            // The buffer goes back to the batch: no allocation of its size next step.
            self.batch.emb = g;
        }
        self.step += 1;
        self.samples += b;
        self.loss_sum += loss_value as f64 * b as f64;
        self.loss_n += b;
        self.timings.train_s += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Validation and test scores of the current model (and the test BCE per frequency bucket,
    /// kept in `last_freq`).
    fn evaluate(&mut self) -> Scores {
        let t0 = Instant::now();
        let (val_bce, val_auc) = self.score(self.ds.splits.val.clone()).0;
        let ((test_bce, test_auc), logits, labels) = self.score(self.ds.splits.test.clone());
        self.last_freq = self.test_buckets.bce(&logits, &labels);
        self.timings.eval_s += t0.elapsed().as_secs_f64();
        Scores { val_bce, val_auc, test_bce, test_auc }
    }

    /// (BCE, AUC) over the rows `range`, in batches of `eval_batch_size`, the logits and the labels.
    fn score(&mut self, range: std::ops::Range<usize>) -> ((f64, f64), Vec<f32>, Vec<f32>) {
        let (ds, dim, t_count) = (self.ds, self.dim, self.ds.n_cat());
        let eval_net = self.net.valid();
        let mut logits = Vec::with_capacity(range.len());
        let mut b = Batch::default();
        let mut chunk = Vec::with_capacity(self.cfg.eval_batch_size);
        for start in range.clone().step_by(self.cfg.eval_batch_size) {
            let rows = start..(start + self.cfg.eval_batch_size).min(range.end);
            chunk.clear();
            chunk.extend(rows.clone());
            b.fill(ds, &chunk);
            // Out of core: scored rows are not needed again until the next evaluation.
            ds.release(rows);
            self.tables.forward(&b.cats, &mut b.emb);
            let n = chunk.len();
            let dense = Tensor::<2>::from_data(TensorData::new(b.dense.clone(), [n, self.dense_w]), &self.base);
            let emb = Tensor::<3>::from_data(TensorData::new(std::mem::take(&mut b.emb), [t_count, n, dim]), &self.base);
            let out = eval_net.forward(dense, emb);
            logits.extend(out.into_data().try_into_vec::<f32>().expect("f32 logits"));
        }
        let labels: Vec<f32> = range.map(|r| ds.label(r)).collect();
        ((bce_host(&logits, &labels), auc(&logits, &labels)), logits, labels)
    }

    /// Records an evaluation, snapshots the best model for post-training methods, and returns
    /// whether early stopping says to stop.
    fn record(&mut self, epoch: usize, scores: Scores) -> bool {
        // Only a model within budget can be the best one (PEP before its prune is not): the
        // best evaluation, the snapshot and early stopping all count eligible evaluations only.
        let eligible = self.tables.within_budget();
        push_eval(&mut self.evals, &self.eligible, epoch, self.step, &mut self.loss_sum, &mut self.loss_n, scores, eligible, &mut self.since_best);
        self.eligible.push(eligible);
        self.freq_evals.push(self.last_freq);
        if self.post_training && eligible && self.since_best == 0 {
            self.snapshot = Some((self.net.clone(), self.tables.snapshot()));
        }
        self.cfg.early_stopping_patience.is_some_and(|p| self.since_best > p)
    }

    /// Runs a lifecycle hook on every table, timed as cluster time, logged with `when`.
    fn hook(&mut self, when: &str, f: impl Fn(&mut dyn EmbeddingMethod) -> Result<cqr_methods::HookReport, cqr_methods::MethodError> + Sync) -> Result<(), TrainError> {
        let t0 = Instant::now();
        let log = self.tables.hook(f)?;
        self.timings.cluster_s += t0.elapsed().as_secs_f64();
        self.hook_log.extend(log.into_iter().map(|l| format!("{when}: {l}")));
        Ok(())
    }

    /// Restores the best snapshot (post-training methods), compresses, and assembles the result.
    fn finish(mut self) -> Result<RunResult, TrainError> {
        if let Some((best_net, weights)) = self.snapshot.take() {
            self.net = best_net;
            self.tables.restore(&weights);
        }
        let tables_train = self.tables.records();
        let total_train = self.tables.total();
        // PQ/RQ compress here; other methods do nothing.
        let t0 = Instant::now();
        let log = self.tables.hook(|m: &mut dyn EmbeddingMethod| m.on_train_end())?;
        self.timings.compress_s += t0.elapsed().as_secs_f64();
        let compressed = if log.is_empty() {
            None
        } else {
            self.hook_log.extend(log);
            Some(self.evaluate())
        };
        // The best evaluation among those within budget (all of them, if none was).
        let any_eligible = self.eligible.iter().any(|&e| e);
        let (best_i, best) = self.evals.iter().enumerate().filter(|(i, _)| !any_eligible || self.eligible[*i]).min_by(|a, b| a.1.scores.val_bce.total_cmp(&b.1.scores.val_bce)).map(|(i, e)| (i, *e)).expect("at least one evaluation");
        let test_bce_by_frequency = if compressed.is_some() { self.last_freq } else { self.freq_evals[best_i] };
        // PQ/RQ: the compressed model is evaluated once; the trained dense model's AUCs are not
        // the method's.
        let best_val_auc = match compressed {
            Some(c) => c.val_auc,
            None => self.evals.iter().zip(&self.eligible).filter(|(_, &ok)| !any_eligible || ok).map(|(e, _)| e.scores.val_auc).fold(f64::NEG_INFINITY, f64::max),
        };
        Ok(RunResult {
            reported: compressed.unwrap_or(best.scores),
            best,
            stored_best_val_auc: best_val_auc,
            compressed,
            tables_train,
            tables_final: self.tables.records(),
            total_train,
            total_final: self.tables.total(),
            mlp_params: self.mlp_params,
            train_samples_per_s: self.samples as f64 / self.timings.train_s.max(1e-9),
            timings: self.timings,
            peak_rss_bytes: peak_rss_bytes(),
            hook_log: self.hook_log,
            teacher: self.ds.teacher,
            train_click_rate: self.ds.label_rate(self.ds.splits.train.clone()),
            test_bce_by_frequency: Some(test_bce_by_frequency),
            skipped: self.ds.skipped.clone(),
            evals: self.evals,
        })
    }
}

/// Appends an evaluation and updates `since_best`, the evaluations since the best eligible one
/// (`eligible[i]`: evaluation `i` was within budget). An ineligible evaluation leaves it at 0:
/// patience starts counting at the first model within budget.
#[allow(clippy::too_many_arguments)]
fn push_eval(evals: &mut Vec<EvalPoint>, eligible: &[bool], epoch: usize, step: usize, loss_sum: &mut f64, loss_n: &mut usize, scores: Scores, is_eligible: bool, since_best: &mut usize) {
    let best = evals.iter().zip(eligible).filter(|(_, &ok)| ok).map(|(e, _)| e.scores.val_bce).fold(f64::INFINITY, f64::min);
    *since_best = if !is_eligible || scores.val_bce < best { 0 } else { *since_best + 1 };
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

#[cfg(test)]
mod tests {
    use super::*;
    use cqr_data::synthetic::{generate_gmf, GmfSynthConfig};

    /// Paired comparisons rely on it: the batches of a run depend on the seed and the data, and
    /// on nothing else (`train` hands this source to the epoch order alone).
    #[test]
    fn the_batch_order_depends_only_on_the_seed() {
        let ds = generate_gmf(&GmfSynthConfig { rows: 2000, users: 30, items: 30, ..Default::default() }).unwrap();
        let batches = |seed: u64, shuffle: Shuffle| -> Vec<Vec<usize>> {
            let mut rng = batch_rng(seed);
            let mut order = EpochOrder::new(&ds, shuffle);
            let mut out = vec![];
            for _ in 0..2 {
                order.start_epoch(&mut rng);
                while let Some(b) = order.next_batch(128, &mut rng) {
                    out.push(b.to_vec());
                }
            }
            out
        };
        for shuffle in [Shuffle::Full, Shuffle::Blocks { block_rows: 256, window: 2 }] {
            assert_eq!(batches(3, shuffle), batches(3, shuffle));
            assert_ne!(batches(3, shuffle), batches(4, shuffle));
        }
    }

    /// `evals_per_epoch: k` evaluates about k times an epoch whatever the row count.
    #[test]
    fn evals_per_epoch_spreads_evaluations_over_each_epoch() {
        let cfg = TrainConfig { evals_per_epoch: Some(4), ..Default::default() };
        assert_eq!(cfg.eval_interval(100), Some(25));
        assert_eq!(cfg.eval_interval(10), Some(3));
        assert_eq!(cfg.eval_interval(2), Some(1));
        assert_eq!(TrainConfig { eval_every_steps: Some(7), ..Default::default() }.eval_interval(100), Some(7));
        assert_eq!(TrainConfig::default().eval_interval(100), None);
        assert!(TrainConfig { evals_per_epoch: Some(0), ..Default::default() }.validate().is_err());
        assert!(TrainConfig { evals_per_epoch: Some(2), eval_every_steps: Some(5), ..Default::default() }.validate().is_err());
        for rows in [2000, 8000] {
            let ds = generate_gmf(&GmfSynthConfig { rows, users: 30, items: 30, ..Default::default() }).unwrap();
            let spec = EmbeddingSpec { method: "dense".into(), budget: u64::MAX, options: serde_json::Value::Null, init_scale: 0.05, quantize: None, dense_under_cap: true };
            let cfg = TrainConfig { epochs: 2, batch_size: 64, evals_per_epoch: Some(4), ..Default::default() };
            let r = train(&ds, &ModelConfig::Gmf { dim: 4 }, &spec, &cfg).unwrap();
            let steps = ds.splits.train.len().div_ceil(64);
            let k = steps.div_ceil(4);
            // In-epoch evaluations at every multiple of k before the last step, plus each epoch end.
            assert_eq!(r.evals.len(), (2 * steps - 1) / k + 2, "{rows} rows");
            assert!((7..=9).contains(&r.evals.len()), "{rows} rows: {} evaluations", r.evals.len());
        }
        // Serialised only when set: configs without it keep their cell ids.
        assert!(!serde_json::to_string(&TrainConfig::default()).unwrap().contains("evals_per_epoch"));
    }

    /// A NaN training loss (no step since the previous evaluation) survives a JSON round trip.
    #[test]
    fn an_eval_point_without_steps_reads_back() {
        let e = EvalPoint { epoch: 0, step: 3, train_loss: f64::NAN, scores: Scores { val_bce: 0.5, val_auc: 0.6, test_bce: 0.5, test_auc: 0.6 } };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"train_loss\":null"), "{json}");
        let back: EvalPoint = serde_json::from_str(&json).unwrap();
        assert!(back.train_loss.is_nan() && back.step == 3);
        let ok: EvalPoint = serde_json::from_str(&json.replace("null", "0.25")).unwrap();
        assert_eq!(ok.train_loss, 0.25);
    }
}
