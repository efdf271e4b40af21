//! The day-by-day protocol (`training.days: D`): what production sees, new ids every day.
//!
//! The rows, in time order, are cut into `D` equal days ([`cqr_data::days`]). Day 0 is trained
//! on; then each day `d >= 1` is first scored by the model trained on days `0..d` (progressive
//! validation: no row is scored by a model that trained on it) and then trained on, one pass in
//! a seeded shuffle within the day. The methods' lifecycle sees a day as an epoch: `on_epoch_end`
//! after every day but the last (CQR's epoch schedule clusters there, on the ids seen so far),
//! `on_step` after every step but the last.
//!
//! Scores: per day, BCE and AUC over all its rows, and split by novelty: rows whose id in the
//! largest table no earlier day trained on (*new*) against the others (*seen*), and rows with a
//! new id in any table against rows whose ids were all seen. The run's validation scores pool
//! the rows of days `1..=V` and its test scores those of days `V+1..D` (`V = (D - 1) / 2`): a
//! tuner selects on the earlier days and the later ones judge.
//!
//! Not defined here: post-training compression (PQ, RQ, quantization: the progressive scores
//! are those of the model as it trained), early stopping and in-day evaluations.

use serde::{Deserialize, Serialize};

use cqr_data::days::{day_ranges, val_days};
use cqr_data::metrics::{auc, bce_with_logits};
use cqr_data::Dataset;

use super::order::batch_rng;
use super::{Scores, TrainError, Trainer};

/// Scores over a set of progressively scored rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoveltyScores {
    pub rows: u64,
    pub bce: f64,
    pub auc: f64,
    /// Rows whose id in the largest table no earlier day trained on.
    pub new_rows: u64,
    /// BCE of those rows and of the others (`None` for an empty set).
    pub new_bce: Option<f64>,
    pub seen_bce: Option<f64>,
    /// Rows with an id in any table that no earlier day trained on.
    pub any_new_rows: u64,
    /// BCE of those rows and of the rows all of whose ids were trained on before.
    pub any_new_bce: Option<f64>,
    pub all_seen_bce: Option<f64>,
}

/// One day's progressive scores (taken before training on it) and its mean training loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DayScores {
    pub day: usize,
    #[serde(flatten)]
    pub scores: NoveltyScores,
    pub train_loss: f64,
}

/// A day-by-day run's scores: every scored day (1..D) and the validation and test pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyScores {
    pub days: Vec<DayScores>,
    pub val: NoveltyScores,
    pub test: NoveltyScores,
    /// Days scored while some table was over its budget (PEP or magnitude pruning before the
    /// prune): those scores are not the method's at its cap. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub over_budget_days: Vec<usize>,
}

/// Progressive logits with their labels and novelty flags, pooled over days.
#[derive(Default)]
struct Pool {
    logits: Vec<f32>,
    labels: Vec<f32>,
    new: Vec<bool>,
    any_new: Vec<bool>,
}

impl Pool {
    fn extend(&mut self, other: &Pool) {
        self.logits.extend(&other.logits);
        self.labels.extend(&other.labels);
        self.new.extend(&other.new);
        self.any_new.extend(&other.any_new);
    }

    fn scores(&self) -> NoveltyScores {
        let subset = |flags: &[bool], want: bool| -> Option<f64> {
            let (z, y): (Vec<f32>, Vec<f32>) = (self.logits.iter().zip(&self.labels).zip(flags))
                .filter(|(_, &f)| f == want)
                .map(|((&z, &y), _)| (z, y))
                .unzip();
            (!z.is_empty()).then(|| bce_with_logits(&z, &y))
        };
        NoveltyScores {
            rows: self.logits.len() as u64,
            bce: bce_with_logits(&self.logits, &self.labels),
            auc: auc(&self.logits, &self.labels),
            new_rows: self.new.iter().filter(|&&f| f).count() as u64,
            new_bce: subset(&self.new, true),
            seen_bce: subset(&self.new, false),
            any_new_rows: self.any_new.iter().filter(|&&f| f).count() as u64,
            any_new_bce: subset(&self.any_new, true),
            all_seen_bce: subset(&self.any_new, false),
        }
    }
}

/// Which ids some training day has touched, per column.
struct Seen {
    ids: Vec<Vec<bool>>,
    largest: usize,
}

impl Seen {
    fn new(ds: &Dataset) -> Self {
        let largest = (0..ds.n_cat()).max_by_key(|&c| (ds.cardinalities[c], std::cmp::Reverse(c))).unwrap_or(0);
        Seen { ids: ds.cardinalities.iter().map(|&n| vec![false; n]).collect(), largest }
    }

    /// Per row of `rows`: (its largest-table id is new, some id is new).
    fn flags(&self, ds: &Dataset, rows: std::ops::Range<usize>) -> (Vec<bool>, Vec<bool>) {
        rows.map(|r| {
            let row = ds.cat_row(r);
            let new = |c: usize| !self.ids[c][row[c] as usize];
            (new(self.largest), (0..row.len()).any(new))
        })
        .unzip()
    }

    fn mark(&mut self, ds: &Dataset, rows: std::ops::Range<usize>) {
        for r in rows {
            for (c, &id) in ds.cat_row(r).iter().enumerate() {
                self.ids[c][id as usize] = true;
            }
        }
    }
}

/// Runs the protocol on a trainer built for it; the run's evaluation is the pooled scores.
pub(super) fn run(t: &mut Trainer, days: usize) -> Result<DailyScores, TrainError> {
    let ds = t.ds;
    let ranges = day_ranges(ds.n_rows(), days);
    let last_step: usize = ranges.iter().map(|r| r.len().div_ceil(t.cfg.batch_size)).sum();
    let mut rng = batch_rng(t.cfg.seed);
    let mut seen = Seen::new(ds);
    let (mut per_day, mut val, mut test) = (vec![], Pool::default(), Pool::default());
    let mut over_budget_days = vec![];
    for (d, range) in ranges.iter().enumerate() {
        if d > 0 && !t.tables.within_budget() {
            over_budget_days.push(d);
        }
        let scored = (d > 0).then(|| score_day(t, &seen, range.clone()));
        let train_loss = train_day(t, d, range.clone(), last_step, &mut rng)?;
        seen.mark(ds, range.clone());
        if let Some(pool) = scored {
            per_day.push(DayScores { day: d, scores: pool.scores(), train_loss });
            if d <= val_days(days) {
                val.extend(&pool)
            } else {
                test.extend(&pool)
            }
        }
        if d + 1 < days {
            t.hook(&format!("day {d}"), |m| m.on_epoch_end(d))?;
        }
    }
    let (val, test) = (val.scores(), test.scores());
    let scores = Scores { val_bce: val.bce, val_auc: val.auc, test_bce: test.bce, test_auc: test.auc };
    t.record(days - 1, scores);
    Ok(DailyScores { days: per_day, val, test, over_budget_days })
}

/// The progressive logits of a day's rows with their novelty flags.
fn score_day(t: &mut Trainer, seen: &Seen, range: std::ops::Range<usize>) -> Pool {
    let t0 = std::time::Instant::now();
    let (new, any_new) = seen.flags(t.ds, range.clone());
    let (_, logits, labels) = t.score(range);
    t.timings.eval_s += t0.elapsed().as_secs_f64();
    Pool { logits, labels, new, any_new }
}

/// One pass over a day's rows in a seeded shuffle; returns the mean training loss.
fn train_day(
    t: &mut Trainer,
    day: usize,
    range: std::ops::Range<usize>,
    last_step: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<f64, TrainError> {
    let mut rows: Vec<usize> = range.collect();
    super::order::shuffle(&mut rows, rng);
    let (mut sum, mut n) = (0.0, 0usize);
    for chunk in rows.chunks(t.cfg.batch_size) {
        sum += t.step(chunk, day)? as f64 * chunk.len() as f64;
        n += chunk.len();
        if t.step_hooks && t.step < last_step {
            let step = t.step;
            t.hook(&format!("step {step}"), |m| m.on_step(step))?;
        }
    }
    Ok(sum / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::DlrmConfig;
    use crate::{train, EmbeddingSpec, ModelConfig, TrainConfig};
    use cqr_data::days::{daily_splits, Drift};
    use cqr_data::synthetic::{generate_criteo, CriteoSynthConfig};
    use cqr_data::Splits;

    fn drifting(rows: usize, days: usize) -> Dataset {
        let drift = Drift { days, new_ids: 0.2, retire: 0.1, rank_drift: 0.3 };
        let cfg = CriteoSynthConfig {
            rows,
            cardinality_scale: 0.001,
            groups: Some(20),
            drift: Some(drift),
            ..Default::default()
        };
        generate_criteo(&cfg).unwrap()
    }

    fn hashing(budget: u64) -> EmbeddingSpec {
        EmbeddingSpec {
            method: "hashing".into(),
            budget,
            options: serde_json::Value::Null,
            init_scale: 0.05,
            quantize: None,
            dense_under_cap: true,
        }
    }

    /// Day 1 is scored by the model of day 0 alone: the same as an ordinary one-epoch run that
    /// trains on day 0 (same seed, so the same batch order) and tests on day 1. Scoring after
    /// training on the day, or any leak of day 1 into training, would change it.
    #[test]
    fn each_day_is_scored_before_it_is_trained_on() {
        let ds = drifting(4000, 4);
        let model = ModelConfig::Dlrm(DlrmConfig::small());
        let cfg = TrainConfig { epochs: 1, batch_size: 64, days: Some(4), ..Default::default() };
        let r = train(&ds, &model, &hashing(16 * 64), &cfg).unwrap();
        let daily = r.daily.as_ref().expect("daily scores");
        assert_eq!(daily.days.iter().map(|d| d.day).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(daily.days.iter().map(|d| d.scores.rows).sum::<u64>(), 3000);
        assert_eq!((daily.val.rows, daily.test.rows), (1000, 2000), "val: day 1; test: days 2-3");
        assert_eq!((r.reported.val_bce, r.reported.test_bce), (daily.val.bce, daily.test.bce));
        assert!(daily.days.iter().all(|d| d.scores.new_rows > 0 && d.scores.any_new_rows >= d.scores.new_rows));
        assert!(r.test_bce_by_frequency.is_none());

        let day1 = Splits { train: 0..1000, val: 1000..2000, test: 1000..2000 };
        let one_day = Dataset { splits: day1, ..ds.clone() };
        let plain = train(&one_day, &model, &hashing(16 * 64), &TrainConfig { days: None, ..cfg.clone() }).unwrap();
        assert_eq!(plain.reported.test_bce, daily.days[0].scores.bce);
        assert_eq!(plain.reported.test_auc, daily.days[0].scores.auc);
    }

    #[test]
    fn the_protocol_refuses_what_it_does_not_define() {
        let ds = drifting(2000, 4);
        let model = ModelConfig::Dlrm(DlrmConfig::small());
        let cfg = TrainConfig { epochs: 1, batch_size: 64, days: Some(4), ..Default::default() };
        let err = |ds: &Dataset, spec: &EmbeddingSpec, cfg: &TrainConfig| {
            train(ds, &model, spec, cfg).unwrap_err().to_string()
        };
        assert!(err(&ds, &hashing(1024), &TrainConfig { epochs: 2, ..cfg.clone() }).contains("epochs"));
        assert!(err(&ds, &hashing(1024), &TrainConfig { early_stopping_patience: Some(2), ..cfg.clone() })
            .contains("early stopping"));
        let pq = EmbeddingSpec { method: "pq".into(), ..hashing(1024) };
        assert!(err(&ds, &pq, &cfg).contains("post-training"));
        let other_days = Dataset { splits: daily_splits(2000, 5).unwrap(), ..ds.clone() };
        assert!(err(&other_days, &hashing(1024), &cfg).contains("splits"));
    }
}
