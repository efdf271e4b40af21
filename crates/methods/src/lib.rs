//! Compressed embedding tables, in plain Rust, with fused sparse updates and exact accounting.
//!
//! Every method implements [`EmbeddingMethod`] in a file of its own and is registered by name in
//! [`registry`]. A method is built once from validated [`MethodParams`] (vocabulary, dim, budget,
//! optimizer, seed, its own options); after that `forward` and `backward` cannot fail.

pub mod export;
mod hash;
mod index;
pub mod kmeans;
pub mod least_squares;
mod nearest;
mod optim;
pub mod quantize;
pub mod registry;
mod shared_array;
pub mod simd;
#[cfg(test)]
pub(crate) mod testing;

// The methods: one line each declares the module, registers it by name and states its facts
// (see `registry`). Registry order is report and chart order.
registry::methods! {
    dense::Dense,
    hashing::Hashing,
    qr::Qr,
    ce::Ce,
    pq::Pq { post_training },
    rq::Rq { post_training },
    cqr::Cqr,
    bloom::Bloom,
    hashednets::HashedNets,
    robe::Robe,
    hash_embedding::HashEmbedding,
    lowdim::LowDim,
    ttrec::TtRec,
    dhe::Dhe,
    cafe::Cafe,
    adaembed::AdaEmbed,
    alpt::Alpt,
    mdfreq::MdFreq { needs_counts },
    pep::Pep { trains_full_table },
    magprune::MagPrune { trains_full_table },
    mpzch::Mpzch,
    #[cfg(test)] // docs/methods.md's worked example, compiled for the tests only
    example::Example,
}

use serde::{Deserialize, Serialize};

pub use optim::{RowOptimizer, Table};
pub use quantize::{Quantize, Quantized};
pub use registry::{build_method, method_names};

/// Errors at construction or in a lifecycle hook; never raised by `forward`/`backward`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MethodError {
    #[error("unknown method `{0}` (known: {known})", known = method_names().join(", "))]
    UnknownMethod(String),
    #[error("method `{method}`: bad options: {reason}")]
    BadOptions { method: String, reason: String },
    #[error("method `{method}`: budget of {budget} parameters is impossible: {reason}")]
    Budget { method: String, budget: u64, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// What a method is built from. `options` holds the method's own options (a JSON/YAML map); each
/// method deserialises it into a typed struct that rejects unknown keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodParams {
    pub vocab: usize,
    pub dim: usize,
    /// Cap on trainable parameters of this table.
    pub budget: u64,
    pub optimizer: RowOptimizer,
    pub seed: u64,
    /// Total training epochs (CQR's default schedule depends on it).
    pub epochs: usize,
    /// Optimizer steps per epoch (0 = unknown); step-based schedules need it.
    #[serde(default)]
    pub steps_per_epoch: usize,
    /// The training loop's evaluation interval in steps, if any (CQR can cluster at evaluations).
    #[serde(default)]
    pub eval_every_steps: Option<usize>,
    /// Half-width of the uniform initialisation of a full embedding vector.
    pub init_scale: f32,
    pub options: serde_json::Value,
    /// Cardinalities of every table of the model, this one included (empty when unknown): for
    /// rules that size tables jointly (low-dim's α rule).
    #[serde(default)]
    pub table_vocabs: Vec<usize>,
    /// How often each id of this table occurs in the training split (`None` when unknown), for
    /// methods that size rows by frequency before training (`registry::needs_counts`). Never
    /// serialised: it is data, not configuration.
    #[serde(skip)]
    pub id_counts: Option<std::sync::Arc<[u32]>>,
}

impl MethodParams {
    pub fn new(vocab: usize, dim: usize, budget: u64) -> Self {
        MethodParams {
            vocab,
            dim,
            budget,
            optimizer: RowOptimizer::default(),
            seed: 0,
            epochs: 1,
            steps_per_epoch: 0,
            eval_every_steps: None,
            init_scale: 0.05,
            options: serde_json::Value::Null,
            table_vocabs: vec![],
            id_counts: None,
        }
    }
    pub fn with_options(mut self, options: serde_json::Value) -> Self {
        self.options = options;
        self
    }
    pub fn with_optimizer(mut self, o: RowOptimizer) -> Self {
        self.optimizer = o;
        self
    }
    pub fn with_seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }
    pub fn with_epochs(mut self, e: usize) -> Self {
        self.epochs = e;
        self
    }
    pub fn with_steps(mut self, steps_per_epoch: usize, eval_every_steps: Option<usize>) -> Self {
        self.steps_per_epoch = steps_per_epoch;
        self.eval_every_steps = eval_every_steps;
        self
    }

    /// Checks shared by every method.
    pub(crate) fn check_common(&self, method: &str) -> Result<(), MethodError> {
        let bad = |r: String| MethodError::BadOptions { method: method.into(), reason: r };
        if self.vocab == 0 {
            return Err(bad("vocabulary is empty".into()));
        }
        if self.vocab > u32::MAX as usize {
            return Err(bad(format!("vocabulary {} exceeds 2^32 - 1 ids", self.vocab)));
        }
        if self.dim == 0 {
            return Err(bad("embedding dim must be >= 1".into()));
        }
        if !(self.init_scale.is_finite() && self.init_scale >= 0.0) {
            return Err(bad(format!("init_scale must be finite and >= 0, got {}", self.init_scale)));
        }
        self.optimizer.validate(method)
    }

    /// Rows of `dim` floats the budget allows; an error if not even one.
    pub(crate) fn budget_rows(&self, method: &str, min_rows: u64) -> Result<usize, MethodError> {
        let rows = self.budget / self.dim as u64;
        if rows < min_rows {
            return Err(MethodError::Budget {
                method: method.into(),
                budget: self.budget,
                reason: format!(
                    "needs at least {min_rows} rows of dim {} ({} parameters)",
                    self.dim,
                    min_rows * self.dim as u64
                ),
            });
        }
        Ok(rows as usize)
    }

    /// Deserialises the method's own options (null = defaults), rejecting unknown keys.
    pub(crate) fn options<T: serde::de::DeserializeOwned + Default>(&self, method: &str) -> Result<T, MethodError> {
        if self.options.is_null() {
            return Ok(T::default());
        }
        serde_json::from_value(self.options.clone())
            .map_err(|e| MethodError::BadOptions { method: method.into(), reason: e.to_string() })
    }
}

/// Memory of a method, exactly: trainable floats, optimizer state, index arrays as stored, and
/// other fixed-size state (hash function coefficients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Accounting {
    pub trainable_params: u64,
    pub optimizer_state_bytes: u64,
    pub index_bytes: u64,
    pub other_bytes: u64,
    /// Bytes of the trainable parameters as stored once quantized (codes plus per-row scale and
    /// bias, see [`quantize`]); `None`: 4 bytes each (f32). Not serialised when unset, so stored
    /// records of unquantized runs stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantized_param_bytes: Option<u64>,
}

impl Accounting {
    pub fn param_bytes(&self) -> u64 {
        self.quantized_param_bytes.unwrap_or(4 * self.trainable_params)
    }
    pub fn total_bytes(&self) -> u64 {
        self.param_bytes() + self.optimizer_state_bytes + self.index_bytes + self.other_bytes
    }
    pub fn add(&mut self, o: &Accounting) {
        // Parameter bytes first (an unquantized side counts 4 bytes a parameter).
        if self.quantized_param_bytes.is_some() || o.quantized_param_bytes.is_some() {
            self.quantized_param_bytes = Some(self.param_bytes() + o.param_bytes());
        }
        self.trainable_params += o.trainable_params;
        self.optimizer_state_bytes += o.optimizer_state_bytes;
        self.index_bytes += o.index_bytes;
        self.other_bytes += o.other_bytes;
    }
}

/// What a lifecycle hook did (so the training loop can time and log it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookReport {
    /// Whether the embeddings changed (CQR clustered, PQ/RQ compressed).
    pub changed: bool,
    /// Human-readable detail, e.g. k-means inertia per column.
    pub detail: String,
}

/// One embedding table method.
pub trait EmbeddingMethod: Send + Sync {
    fn name(&self) -> &'static str;
    fn vocab(&self) -> usize;
    fn dim(&self) -> usize;

    /// `out[i*dim..(i+1)*dim]` = embedding of `ids[i]`; `out.len() == ids.len() * dim`.
    /// Ids must be `< vocab` (the data crate guarantees it).
    fn forward(&self, ids: &[u32], out: &mut [f32]);

    /// Applies one optimizer step given `grad = dLoss/d out` for the same `ids` as the matching
    /// `forward`. Only rows that the batch touched change.
    fn backward(&mut self, ids: &[u32], grad: &[f32]);

    fn accounting(&self) -> Accounting;

    /// Every trainable weight, in a fixed order (for tests, checkpoints and accounting checks).
    fn parameters_mut(&mut self) -> Vec<&mut [f32]>;

    /// Called after each training epoch (0-based), except the last. CQR clusters here by default.
    fn on_epoch_end(&mut self, _epoch: usize) -> Result<HookReport, MethodError> {
        Ok(HookReport::default())
    }

    /// Called after optimizer step `step` (1-based count of steps done since the start; after
    /// that step's evaluation, if any), except the very last step. CQR's step schedule clusters here.
    fn on_step(&mut self, _step: usize) -> Result<HookReport, MethodError> {
        Ok(HookReport::default())
    }

    /// Whether `on_step` can do anything (the training loop skips the per-step call otherwise).
    fn uses_step_hook(&self) -> bool {
        false
    }

    /// Whether the table as it is now is the method's model within its budget (default: always).
    /// PEP's full table before its prune is not: the training loop picks the best evaluation,
    /// and the best-model snapshot, among evaluations taken while every table was within budget.
    fn within_budget(&self) -> bool {
        true
    }

    /// Called once after training. PQ and RQ compress here.
    fn on_train_end(&mut self) -> Result<HookReport, MethodError> {
        Ok(HookReport::default())
    }

    /// The row width of each slice of [`parameters_mut`](Self::parameters_mut), in the same
    /// order: [`quantize`] quantizes a slice in rows of this many values (a shorter last row
    /// allowed). Default: `dim` for every slice (right for tables of full rows, and blocks of
    /// `dim` values for flat arrays such as ROBE's); methods whose tables hold sub-vectors or
    /// matrices say their widths.
    fn row_widths(&mut self) -> Vec<usize> {
        let d = self.dim();
        self.parameters_mut().iter().map(|_| d).collect()
    }

    /// State besides the trainable weights that training changes (CQR's pointers and T1
    /// hash), for a best-model snapshot: the weights of an earlier point mean nothing without
    /// it. Default: none (the weights are the whole model).
    fn layout_snapshot(&self) -> Option<Layout> {
        None
    }

    /// Puts back what [`layout_snapshot`](Self::layout_snapshot) returned.
    fn restore_layout(&mut self, _layout: &Layout) {}

    /// The served table as arrays and a lookup program (`cqr export`; see [`export`]). `None`:
    /// this method cannot be exported (yet); the export then refuses by name.
    fn export(&self) -> Option<export::Export> {
        None
    }
}

/// Each lookup's gradient L2 norm over the batch's mean norm (mean 1 per lookup; all 1 when every
/// norm is 0), written into `out`: the importance CAFE and AdaEmbed accumulate per id.
pub(crate) fn normalised_grad_norms(grad: &[f32], dim: usize, out: &mut Vec<f32>) {
    out.clear();
    out.extend(grad.chunks_exact(dim).map(|g| g.iter().map(|x| x * x).sum::<f32>().sqrt()));
    let sum: f64 = out.iter().map(|&x| x as f64).sum();
    if sum > 0.0 {
        let scale = (out.len() as f64 / sum) as f32;
        out.iter_mut().for_each(|x| *x *= scale);
    } else {
        out.iter_mut().for_each(|x| *x = 1.0);
    }
}

/// A method's opaque layout state (see [`EmbeddingMethod::layout_snapshot`]).
pub type Layout = Box<dyn std::any::Any + Send + Sync>;

/// Splits `0..vocab` into batches for full-table passes with bounded memory.
pub(crate) const ID_BATCH: usize = 1 << 14;
