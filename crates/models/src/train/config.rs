//! The training configuration (`training:` in an experiment file) and the model choice.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use cqr_data::{invalid, Invalid};
use cqr_methods::RowOptimizer;

use crate::dcn::DcnConfig;
use crate::deepfm::DeepFmConfig;
use crate::fused::Precision;
use crate::net::DlrmConfig;
use crate::wdl::WdlConfig;

use super::TrainError;

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
pub enum MlpBackend {
    /// burn's pure-Rust CPU backend.
    #[default]
    Flex,
    /// burn's wgpu backend (build with `--features wgpu`).
    Wgpu,
}

impl MlpBackend {
    pub fn device(self) -> Result<Device, TrainError> {
        match self {
            MlpBackend::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            MlpBackend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            MlpBackend::Wgpu => Err(TrainError::Config("backend wgpu needs a build with `--features wgpu`".into())),
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
    pub backend: MlpBackend,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
    /// Keep the model of the best evaluation and end training with it, for every method (PQ/RQ
    /// always do): `cqr export` writes the model the reported scores were read from. Never
    /// serialised; it changes no score.
    #[serde(skip)]
    pub keep_best_model: bool,
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
    /// After training, time the served model forward only (`ServingCost`: throughput at batch
    /// 2,048, latency at batch 1 and 64) into the record. Not serialised when false, so cell ids
    /// of configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "is_false")]
    pub serving: bool,
    /// The day-by-day protocol over this many days (see `train::daily`): one pass over each day
    /// in time order, each day scored before it is trained on. Needs `epochs: 1`, a full shuffle
    /// and no early stopping, in-epoch evaluation or `stop_after`. Not serialised when unset, so
    /// cell ids of configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<usize>,
    /// Score the test split only at an evaluation that becomes the best so far by validation
    /// BCE (the only ones a run can report), not at every evaluation: about half the
    /// evaluation work. The reported scores are the same; the other evaluations' test scores
    /// are NaN in the record and `epochs.csv`. Not serialised when false, so cell ids of
    /// configs written before this option existed stay the same.
    #[serde(skip_serializing_if = "is_false")]
    pub test_at_best_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
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
            ShuffleRepr::Name(n) => {
                Err(format!("unknown shuffle `{n}` (full, or {{ blocks: {{ block_rows, window }} }})"))
            }
            ShuffleRepr::Blocks { blocks: BlocksRepr { block_rows, window } } => {
                Ok(Shuffle::Blocks { block_rows, window })
            }
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
            backend: MlpBackend::Flex,
            progress: false,
            keep_best_model: false,
            shuffle: Shuffle::Full,
            precision: Precision::F32,
            stop_after: None,
            serving: false,
            days: None,
            test_at_best_only: false,
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
                return bad(format!(
                    "shuffle: blocks needs block_rows >= 1 and window >= 1 (got {block_rows}, {window})"
                ));
            }
        }
        if !self.precision.is_f32() && self.backend != MlpBackend::Flex {
            return bad(format!(
                "precision: bf16 runs on the fused CPU kernels only (backend flex), not on {:?}",
                self.backend
            ));
        }
        if let Some(f) = self.stop_after {
            if !(f > 0.0 && f < 1.0) {
                return bad(format!("stop_after is a fraction of the run's steps in (0, 1), got {f}"));
            }
        }
        if let Some(d) = self.days {
            self.check_daily(d)?;
        }
        if let Some(wd) = self.weight_decay {
            if self.optimizer != OptimizerKind::Adamw {
                return bad(format!(
                    "weight_decay is AdamW's decoupled decay: it needs optimizer: adamw (got {:?})",
                    self.optimizer
                ));
            }
            if !(wd.is_finite() && wd >= 0.0) {
                return bad(format!("weight_decay must be >= 0, got {wd}"));
            }
        }
        Ok(())
    }

    /// What the day-by-day protocol over `days` days needs of the other options.
    fn check_daily(&self, days: usize) -> Result<(), TrainError> {
        let clash = [
            (self.epochs != 1, "epochs other than 1 (one pass over each day)"),
            (self.eval_every_steps.is_some() || self.evals_per_epoch.is_some(), "in-day evaluations"),
            (self.early_stopping_patience.is_some(), "early stopping"),
            (self.stop_after.is_some(), "stop_after (successive halving)"),
            (!self.shuffle.is_full(), "shuffle: blocks"),
        ];
        if days < 3 {
            return Err(TrainError::Config(format!("days must be >= 3 (train, validation and test days), got {days}")));
        }
        match clash.iter().find(|(bad, _)| *bad) {
            Some((_, what)) => Err(TrainError::Config(format!("training.days: {days} does not take {what}"))),
            None => Ok(()),
        }
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
            OptimizerKind::Adam | OptimizerKind::Adamw => RowOptimizer::LazyAdam {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.effective_weight_decay() as f32,
            },
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
    pub fn check_precision(&self, precision: Precision) -> Result<(), Invalid> {
        match self {
            ModelConfig::Gmf { .. } if !precision.is_f32() => {
                invalid("precision", "bf16 applies to the MLPs' matrix products; gmf has no MLP")
            }
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
