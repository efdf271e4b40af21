//! The evaluations of a run and the bookkeeping around them.

use super::{EvalPoint, FrequencyBce, Scores};

/// Every evaluation of a run, with the training loss since the previous one, whether the model
/// was within budget (`eligible`: only such a model can be the best one; PEP before its prune is
/// not), the test BCE per frequency bucket, and how many evaluations have passed since the best
/// eligible one (early stopping's count; an ineligible evaluation keeps it at 0, so patience
/// starts counting at the first model within budget).
#[derive(Debug, Default)]
pub(crate) struct EvalLog {
    evals: Vec<EvalPoint>,
    eligible: Vec<bool>,
    freq: Vec<FrequencyBce>,
    loss_sum: f64,
    loss_n: usize,
    since_best: usize,
}

impl EvalLog {
    /// A training step's mean loss over its `rows` rows.
    pub(crate) fn add_loss(&mut self, loss: f64, rows: usize) {
        self.loss_sum += loss * rows as f64;
        self.loss_n += rows;
    }

    /// Appends an evaluation; the training loss since the previous one is its `train_loss`.
    pub(crate) fn push(&mut self, epoch: usize, step: usize, scores: Scores, eligible: bool, freq: FrequencyBce) {
        let best = self
            .evals
            .iter()
            .zip(&self.eligible)
            .filter(|(_, &ok)| ok)
            .map(|(e, _)| e.scores.val_bce)
            .fold(f64::INFINITY, f64::min);
        self.since_best = if !eligible || scores.val_bce < best { 0 } else { self.since_best + 1 };
        let train_loss = if self.loss_n > 0 { self.loss_sum / self.loss_n as f64 } else { f64::NAN };
        self.evals.push(EvalPoint { epoch, step, train_loss, scores });
        self.eligible.push(eligible);
        self.freq.push(freq);
        (self.loss_sum, self.loss_n) = (0.0, 0);
    }

    /// Whether an evaluation with validation BCE `val_bce` would be the best candidate so far
    /// (the rule of [`EvalLog::best`]: eligible evaluations only once there is one; a tie keeps
    /// the earlier one).
    pub(crate) fn would_be_best(&self, val_bce: f64, eligible: bool) -> bool {
        let min = |only_eligible: bool| {
            (self.evals.iter().zip(&self.eligible))
                .filter(|(_, &ok)| ok || !only_eligible)
                .map(|(e, _)| e.scores.val_bce)
                .fold(f64::INFINITY, f64::min)
        };
        if eligible {
            val_bce < min(true)
        } else {
            !self.eligible.iter().any(|&e| e) && val_bce < min(false)
        }
    }

    /// Evaluations since the best eligible one (0: the last one is the best so far).
    pub(crate) fn since_best(&self) -> usize {
        self.since_best
    }

    /// The candidates for the best model: the eligible evaluations, or all when none was.
    fn candidates(&self) -> impl Iterator<Item = (usize, &EvalPoint)> {
        let any = self.eligible.iter().any(|&e| e);
        self.evals.iter().enumerate().filter(move |(i, _)| !any || self.eligible[*i])
    }

    /// The best evaluation by validation BCE among the candidates, its test BCE by frequency, and
    /// the best validation AUC among them. `None` before the first evaluation.
    pub(crate) fn best(&self) -> Option<(EvalPoint, FrequencyBce, f64)> {
        let (i, best) = self.candidates().min_by(|a, b| a.1.scores.val_bce.total_cmp(&b.1.scores.val_bce))?;
        let auc = self.candidates().map(|(_, e)| e.scores.val_auc).fold(f64::NEG_INFINITY, f64::max);
        Some((*best, self.freq[i], auc))
    }

    pub(crate) fn into_points(self) -> Vec<EvalPoint> {
        self.evals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(val_bce: f64, val_auc: f64) -> Scores {
        Scores { val_bce, val_auc, test_bce: val_bce, test_auc: val_auc }
    }

    #[test]
    fn best_and_patience_count_eligible_evaluations_only() {
        let mut log = EvalLog::default();
        log.add_loss(0.5, 2);
        log.add_loss(0.8, 2);
        log.push(0, 10, s(0.30, 0.9), false, FrequencyBce::default()); // ineligible: never best
        assert_eq!(log.since_best(), 0);
        log.push(0, 20, s(0.40, 0.7), true, FrequencyBce::default());
        log.push(0, 30, s(0.45, 0.8), true, FrequencyBce::default());
        assert_eq!(log.since_best(), 1);
        let (best, _, auc) = log.best().unwrap();
        assert_eq!((best.step, auc), (20, 0.8));
        let points = log.into_points();
        assert!((points[0].train_loss - 0.65).abs() < 1e-12 && points[1].train_loss.is_nan());
    }
}
