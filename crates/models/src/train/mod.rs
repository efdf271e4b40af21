//! One training loop for every model and embedding method.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

use cqr_data::metrics::{auc, bce_with_logits as bce_host};
use cqr_data::Dataset;
use cqr_methods::EmbeddingMethod;

use crate::embeddings::{EmbeddingSpec, EmbeddingTables};
use crate::net::{loss, Net};
use crate::probe::{peak_rss_bytes, reset_peak_rss};

mod config;
mod daily;
mod eval_log;
mod freq;
mod mlp_optim;
mod order;
mod result;
mod serving;

pub use config::*;
pub use daily::{DailyScores, DayScores, NoveltyScores};
pub use freq::train_counts;
pub(crate) use mlp_optim::MlpOptimizer;
pub use result::*;
pub use serving::ServingCost;

use eval_log::EvalLog;
use freq::FrequencyBuckets;
use order::{batch_rng, Batch, EpochOrder};

/// Trains `model` with embedding `spec` on `ds` and evaluates it.
///
/// Phases, each a method of [`Trainer`]: batching ([`Batch::fill`]), one optimizer step
/// ([`Trainer::step`]), evaluation ([`Trainer::evaluate`]), bookkeeping after an evaluation
/// (best-model snapshot, early stopping: [`Trainer::record`]) and the methods' lifecycle hooks
/// ([`Trainer::hook`]): `on_step` after every step but the last, `on_epoch_end` after every epoch
/// but the last, `on_train_end` once.
pub fn train(
    ds: &Dataset,
    model: &ModelConfig,
    spec: &EmbeddingSpec,
    cfg: &TrainConfig,
) -> Result<RunResult, TrainError> {
    Ok(train_model(ds, model, spec, cfg)?.0)
}

/// A trained model: the backbone and its embedding tables, as the run reports them (with
/// `keep_best_model`, the best evaluation's).
pub struct TrainedModel {
    pub(crate) net: Net,
    pub tables: EmbeddingTables,
}

/// [`train`], also returning the model it ends with.
pub fn train_model(
    ds: &Dataset,
    model: &ModelConfig,
    spec: &EmbeddingSpec,
    cfg: &TrainConfig,
) -> Result<(RunResult, TrainedModel), TrainError> {
    cfg.validate()?;
    // A mapped dataset is not scanned (that would read all of it): its cache was checked on open.
    if ds.is_mapped() { ds.validate_shape() } else { ds.validate() }?;
    if ds.splits.train.is_empty() || ds.splits.val.is_empty() || ds.splits.test.is_empty() {
        return Err(TrainError::Config(format!(
            "dataset {} needs non-empty train, val and test splits ({:?})",
            ds.name, ds.splits
        )));
    }
    reset_peak_rss();
    let mut t = Trainer::new(ds, model, spec, cfg)?;
    if let Some(days) = cfg.days {
        return train_daily(t, days);
    }
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

/// The day-by-day protocol ([`daily`]) on a trainer built for it.
fn train_daily(mut t: Trainer, days: usize) -> Result<(RunResult, TrainedModel), TrainError> {
    let want = cqr_data::days::daily_splits(t.ds.n_rows(), days).map_err(|e| TrainError::Config(e.to_string()))?;
    if t.ds.splits != want {
        return Err(TrainError::Config(format!(
            "training.days: {days} needs the dataset's splits to be the days' ({want:?}), got {:?}",
            t.ds.splits
        )));
    }
    if t.post_training {
        return Err(TrainError::Config(
            "the day-by-day protocol scores the model as it trains: post-training compression (pq, rq, quantize) is not defined there".into(),
        ));
    }
    let scores = daily::run(&mut t, days)?;
    t.daily = Some(scores);
    t.finish()
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
    optim: MlpOptimizer,
    mlp_params: u64,
    timings: Timings,
    log: EvalLog,
    hook_log: Vec<String>,
    batch: Batch,
    step: usize,
    samples: usize,
    /// PQ/RQ compress the model of the best validation evaluation, not the last one: CTR models
    /// often overfit after one epoch, and compressing an overfit model would charge the method
    /// for it. The snapshot costs one copy of the (dense) tables.
    post_training: bool,
    /// Whether any table has a step hook (else the per-step call is skipped).
    step_hooks: bool,
    snapshot: Option<(Net, crate::embeddings::TablesSnapshot)>,
    /// The day-by-day protocol's scores, when it ran.
    daily: Option<DailyScores>,
    /// Frequency bucket (0 head, 1 torso, 2 tail) of each test row, by its id in the largest table.
    test_buckets: FrequencyBuckets,
    /// Test BCE per frequency bucket of the last evaluation.
    last_freq: FrequencyBce,
}

impl<'a> Trainer<'a> {
    fn new(
        ds: &'a Dataset,
        model: &ModelConfig,
        spec: &EmbeddingSpec,
        cfg: &'a TrainConfig,
    ) -> Result<Self, TrainError> {
        let dim = model.dim();
        let n_dense = ds.n_dense();
        let base = cfg.backend.device()?;
        let device = base.clone().autodiff();
        let net = Net::new(model, ds, cfg.seed, cfg.precision, &device)?;
        // Day by day, a day is an epoch to the methods' schedules (day 0 is the train split).
        let steps_per_epoch = ds.splits.train.len().div_ceil(cfg.batch_size);
        let counts: Vec<std::sync::Arc<[u32]>> = if cqr_methods::registry::needs_counts(&spec.method) {
            train_counts(ds, &(0..ds.n_cat()).collect::<Vec<_>>()).into_iter().map(Into::into).collect()
        } else {
            vec![]
        };
        let tables = EmbeddingTables::new(
            spec,
            &ds.cat_names,
            &ds.cardinalities,
            dim,
            cfg.row_optimizer(),
            cfg.days.unwrap_or(cfg.epochs),
            (steps_per_epoch, cfg.eval_interval(steps_per_epoch)),
            cfg.seed,
            &counts,
        )?;
        // Post-training compression (PQ/RQ, or quantization of any method) starts from the best
        // model: it is snapshotted at each new best validation BCE.
        let optim = MlpOptimizer::new(cfg, &device);
        let post_training =
            spec.quantize.is_some() || tables.methods.iter().any(|m| cqr_methods::registry::is_post_training(m.name()));
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
            optim,
            timings: Timings::default(),
            log: EvalLog::default(),
            hook_log: vec![],
            test_buckets: FrequencyBuckets::new(ds, &counts),
            last_freq: FrequencyBce::default(),
            batch: Batch::default(),
            step: 0,
            samples: 0,
            post_training,
            step_hooks,
            snapshot: None,
            daily: None,
        })
    }

    /// One optimizer step on the training rows `rows`: gather, forward, backward, MLP step, sparse
    /// table updates.
    fn step(&mut self, rows: &[usize], epoch: usize) -> Result<f32, TrainError> {
        let t0 = Instant::now();
        let (b, dim, t_count) = (rows.len(), self.dim, self.ds.n_cat());
        let device = &self.device;
        self.batch.fill(self.ds, rows);
        self.tables.forward(&self.batch.cats, &mut self.batch.emb);
        let dense = Tensor::<2>::from_data(TensorData::new(self.batch.dense.clone(), [b, self.dense_w]), device);
        let emb =
            Tensor::<3>::from_data(TensorData::new(std::mem::take(&mut self.batch.emb), [t_count, b, dim]), device)
                .require_grad();
        let labels = Tensor::<2>::from_data(TensorData::new(self.batch.labels.clone(), [b, 1]), device);
        let loss = loss(self.net.forward(dense, emb.clone()), labels);
        let loss_value: f32 = loss.clone().into_scalar();
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite { epoch, step: self.step, loss: loss_value as f64 });
        }
        let mut grads = loss.backward();
        let emb_grad = emb.grad_remove(&mut grads).map(|g| g.into_data().try_into_vec::<f32>().expect("f32 gradient"));
        let net = std::mem::replace(&mut self.net, Net::Gmf);
        self.net = net.step(&mut self.optim, self.cfg.lr, grads);
        if let Some(g) = emb_grad {
            self.tables.backward(&g);
            // The buffer goes back to the batch: no allocation of its size next step.
            self.batch.emb = g;
        }
        self.step += 1;
        self.samples += b;
        self.log.add_loss(loss_value as f64, b);
        self.timings.train_s += t0.elapsed().as_secs_f64();
        Ok(loss_value)
    }

    /// Validation and test scores of the current model (and the test BCE per frequency bucket,
    /// kept in `last_freq`).
    /// With `test_at_best_only`, the test split is scored only when this evaluation would be
    /// the best so far (else its test scores are NaN); `always` overrides (the compressed model).
    fn evaluate_with(&mut self, always: bool) -> Scores {
        let t0 = Instant::now();
        let (val_bce, val_auc) = self.score(self.ds.splits.val.clone()).0;
        let wanted =
            always || !self.cfg.test_at_best_only || self.log.would_be_best(val_bce, self.tables.within_budget());
        let (test_bce, test_auc) = if wanted {
            let ((bce, auc), logits, labels) = self.score(self.ds.splits.test.clone());
            self.last_freq = self.test_buckets.bce(&logits, &labels);
            (bce, auc)
        } else {
            (f64::NAN, f64::NAN)
        };
        self.timings.eval_s += t0.elapsed().as_secs_f64();
        Scores { val_bce, val_auc, test_bce, test_auc }
    }

    fn evaluate(&mut self) -> Scores {
        self.evaluate_with(false)
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
            let emb =
                Tensor::<3>::from_data(TensorData::new(std::mem::take(&mut b.emb), [t_count, n, dim]), &self.base);
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
        self.log.push(epoch, self.step, scores, eligible, self.last_freq);
        if (self.post_training || self.cfg.keep_best_model) && eligible && self.log.since_best() == 0 {
            self.snapshot = Some((self.net.clone(), self.tables.snapshot()));
        }
        self.cfg.early_stopping_patience.is_some_and(|p| self.log.since_best() > p)
    }

    /// Runs a lifecycle hook on every table, timed as cluster time, logged with `when`.
    fn hook(
        &mut self,
        when: &str,
        f: impl Fn(&mut dyn EmbeddingMethod) -> Result<cqr_methods::HookReport, cqr_methods::MethodError> + Sync,
    ) -> Result<(), TrainError> {
        let t0 = Instant::now();
        let log = self.tables.hook(f)?;
        self.timings.cluster_s += t0.elapsed().as_secs_f64();
        self.hook_log.extend(log.into_iter().map(|l| format!("{when}: {l}")));
        Ok(())
    }

    /// Restores the best snapshot (post-training methods), compresses, and assembles the result.
    fn finish(mut self) -> Result<(RunResult, TrainedModel), TrainError> {
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
            Some(self.evaluate_with(true))
        };
        // The best evaluation among those within budget (all of them, if none was).
        let (best, best_freq, best_auc) = self.log.best().expect("at least one evaluation");
        let test_bce_by_frequency = if compressed.is_some() { self.last_freq } else { best_freq };
        // Day by day: the test rows' frequency buckets count day 0 only; the novelty split replaces them.
        let test_bce_by_frequency = self.daily.is_none().then_some(test_bce_by_frequency);
        // PQ/RQ: the compressed model is evaluated once; the trained dense model's AUCs are not
        // the method's.
        let best_val_auc = match compressed {
            Some(c) => c.val_auc,
            None => best_auc,
        };
        let serving = if self.cfg.serving { self.serving_cost() } else { None };
        let result = RunResult {
            serving,
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
            test_bce_by_frequency,
            daily: self.daily,
            skipped: self.ds.skipped.clone(),
            evals: self.log.into_points(),
        };
        Ok((result, TrainedModel { net: self.net, tables: self.tables }))
    }
}

fn progress_bar(enabled: bool, len: u64, epoch: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // indicatif draws to stderr and stays quiet when it is not a terminal.
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
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
    fn serving_is_measured_when_asked_and_changes_no_score() {
        let ds = generate_gmf(&GmfSynthConfig { rows: 2000, users: 30, items: 30, ..Default::default() }).unwrap();
        let spec = EmbeddingSpec {
            method: "hashing".into(),
            budget: 4 * 20,
            options: serde_json::Value::Null,
            init_scale: 0.05,
            quantize: None,
            dense_under_cap: true,
        };
        let cfg = TrainConfig { epochs: 1, batch_size: 64, ..Default::default() };
        let plain = train(&ds, &ModelConfig::Gmf { dim: 4 }, &spec, &cfg).unwrap();
        assert!(plain.serving.is_none());
        assert!(!serde_json::to_string(&cfg).unwrap().contains("serving"), "unset: cell ids unchanged");
        let served = train(&ds, &ModelConfig::Gmf { dim: 4 }, &spec, &TrainConfig { serving: true, ..cfg }).unwrap();
        let c = served.serving.expect("measured");
        assert!(c.samples_per_s_b2048 > 0.0 && c.latency_ms_b1[0] > 0.0);
        assert!(c.latency_ms_b1[0] <= c.latency_ms_b1[1] && c.latency_ms_b64[0] <= c.latency_ms_b64[1]);
        assert_eq!(served.reported, plain.reported, "timing the served model changes no score");
    }

    #[test]
    fn evals_per_epoch_spreads_evaluations_over_each_epoch() {
        let cfg = TrainConfig { evals_per_epoch: Some(4), ..Default::default() };
        assert_eq!(cfg.eval_interval(100), Some(25));
        assert_eq!(cfg.eval_interval(10), Some(3));
        assert_eq!(cfg.eval_interval(2), Some(1));
        assert_eq!(TrainConfig { eval_every_steps: Some(7), ..Default::default() }.eval_interval(100), Some(7));
        assert_eq!(TrainConfig::default().eval_interval(100), None);
        assert!(TrainConfig { evals_per_epoch: Some(0), ..Default::default() }.validate().is_err());
        assert!(TrainConfig { evals_per_epoch: Some(2), eval_every_steps: Some(5), ..Default::default() }
            .validate()
            .is_err());
        for rows in [2000, 8000] {
            let ds = generate_gmf(&GmfSynthConfig { rows, users: 30, items: 30, ..Default::default() }).unwrap();
            let spec = EmbeddingSpec {
                method: "dense".into(),
                budget: u64::MAX,
                options: serde_json::Value::Null,
                init_scale: 0.05,
                quantize: None,
                dense_under_cap: true,
            };
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

    /// Scoring the test split only at new bests reports exactly what scoring it every time
    /// does, leaves the other evaluations' test scores NaN, and the record still reads back.
    #[test]
    fn test_scores_at_new_bests_only_report_the_same() {
        let ds = generate_gmf(&GmfSynthConfig { rows: 4000, users: 40, items: 40, ..Default::default() }).unwrap();
        let spec = EmbeddingSpec {
            method: "hashing".into(),
            budget: 4 * 20,
            options: serde_json::Value::Null,
            init_scale: 0.05,
            quantize: None,
            dense_under_cap: true,
        };
        let cfg = TrainConfig { epochs: 4, batch_size: 64, evals_per_epoch: Some(3), lr: 0.03, ..Default::default() };
        let every = train(&ds, &ModelConfig::Gmf { dim: 4 }, &spec, &cfg).unwrap();
        let lean =
            train(&ds, &ModelConfig::Gmf { dim: 4 }, &spec, &TrainConfig { test_at_best_only: true, ..cfg.clone() })
                .unwrap();
        assert_eq!((lean.reported, lean.best), (every.reported, every.best));
        assert_eq!(lean.test_bce_by_frequency, every.test_bce_by_frequency);
        let skipped = lean.evals.iter().filter(|e| e.scores.test_bce.is_nan()).count();
        assert!(skipped > 0 && skipped < lean.evals.len(), "{skipped} of {} evaluations", lean.evals.len());
        for (a, b) in lean.evals.iter().zip(&every.evals) {
            assert_eq!(a.scores.val_bce, b.scores.val_bce);
        }
        let back: RunResult = serde_json::from_str(&serde_json::to_string(&lean).unwrap()).unwrap();
        assert!(back.evals.iter().filter(|e| e.scores.test_bce.is_nan()).count() == skipped);
        assert!(!serde_json::to_string(&cfg).unwrap().contains("test_at_best_only"), "unset: cell ids unchanged");
    }

    /// A NaN training loss (no step since the previous evaluation) survives a JSON round trip.
    #[test]
    fn an_eval_point_without_steps_reads_back() {
        let e = EvalPoint {
            epoch: 0,
            step: 3,
            train_loss: f64::NAN,
            scores: Scores { val_bce: 0.5, val_auc: 0.6, test_bce: 0.5, test_auc: 0.6 },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"train_loss\":null"), "{json}");
        let back: EvalPoint = serde_json::from_str(&json).unwrap();
        assert!(back.train_loss.is_nan() && back.step == 3);
        let ok: EvalPoint = serde_json::from_str(&json.replace("null", "0.25")).unwrap();
        assert_eq!(ok.train_loss, 0.25);
    }
}
