//! What a run returns and stores: scores per evaluation, timings, accounting, the record.

use serde::{Deserialize, Serialize};

use cqr_data::{SkipReport, TeacherScore};
use cqr_methods::Accounting;

use crate::embeddings::TableRecord;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] cqr_data::Invalid),
    #[error(transparent)]
    Method(#[from] cqr_methods::MethodError),
    #[error("non-finite training loss {loss} at epoch {epoch}, step {step} (lower the learning rate?)")]
    NonFinite { epoch: usize, step: usize, loss: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Scores {
    pub val_bce: f64,
    pub val_auc: f64,
    /// NaN (`null` in JSON) at an evaluation that did not score the test split
    /// (`training.test_at_best_only`).
    #[serde(deserialize_with = "nan_if_null")]
    pub test_bce: f64,
    #[serde(deserialize_with = "nan_if_null")]
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
    /// The served model's forward-only cost (`training.serving: true`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<super::ServingCost>,
    /// The day-by-day protocol's per-day and pooled scores (`training.days`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<super::DailyScores>,
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
