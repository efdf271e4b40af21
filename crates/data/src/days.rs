//! Time order: the day-by-day protocol's slices of a dataset, and planted ids that move from day
//! to day.
//!
//! **Days.** A dataset whose rows are in time order (Criteo's files, the planted data below) is
//! cut into `D` consecutive slices of equal size ([`day_ranges`]; the first `n mod D` days get one
//! row more). The protocol trains on day 0, then for each later day evaluates the model on it
//! before training on it (progressive validation). Its splits ([`daily_splits`]): `train` is
//! day 0, `val` days `1..=V` and `test` days `V+1..D` with `V = (D - 1) / 2`: a setting is chosen
//! on the earlier days' progressive scores and judged on the later days', never the other way.
//!
//! **Moving ids** ([`Drift`]). Each column of `n` ids keeps an *active* list in popularity order;
//! a row draws rank `k` of that list with Zipf probability as the static generator does. Day 0's
//! active ids are the first `m0 = floor(n / (1 + new_ids * (D - 1)))` of the column's shuffled
//! ids. At the start of each later day:
//! 1. `floor(retire * m0)` active ids, chosen uniformly, retire (never to return; at least one id
//!    stays active);
//! 2. every surviving id's popularity moves: its sort key is `ln(rank + 1) + rank_drift * N(0, 1)`
//!    (a log-normal jitter of its rank: head ids stay near the head, the tail reshuffles);
//! 3. `floor(new_ids * m0)` ids never seen before arrive (the next ones of the shuffled order),
//!    each at a uniformly random rank (key `ln(U * m + 1)`), so some new ids are popular at once;
//! 4. the list is sorted by key and the Zipf table rebuilt for its length.
//!
//! The teacher's parameters of every id (its group, bias and vector) are drawn once, before day 0:
//! a new id belongs to a latent group like any other, so clustering still has something to find.
//! The ids of all days fit the column's cardinality, which is what a method is built for (for
//! `dense`, a table over the whole range: rows of ids that have not arrived stay at their
//! initialisation).

use std::ops::Range;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::dataset::Splits;
use crate::error::{DataError, Result};
use crate::synthetic::Zipf;

/// The `days` consecutive row ranges of `n` rows, as equal as integers allow.
pub fn day_ranges(n: usize, days: usize) -> Vec<Range<usize>> {
    let days = days.max(1);
    let (q, r) = (n / days, n % days);
    let mut start = 0;
    (0..days)
        .map(|d| {
            let len = q + usize::from(d < r);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// The number of validation days among `days`: days `1..=V` (see the module docs).
pub fn val_days(days: usize) -> usize {
    days.saturating_sub(1) / 2
}

/// The splits of the day-by-day protocol over `n` rows: train = day 0, val = days `1..=V`, test =
/// the rest. An error unless there are at least 3 days of at least one row each.
pub fn daily_splits(n: usize, days: usize) -> Result<Splits> {
    if days < 3 || n < days {
        return Err(DataError::Options(format!(
            "the day-by-day protocol needs at least 3 days of at least one row each (days: {days}, rows: {n})"
        )));
    }
    let r = day_ranges(n, days);
    let v = val_days(days);
    Ok(Splits { train: r[0].clone(), val: r[1].start..r[v].end, test: r[v + 1].start..n })
}

/// How planted ids move from day to day (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drift {
    /// Days the rows are spread over (equal slices, [`day_ranges`]); at least 3.
    pub days: usize,
    /// Ids arriving each day after the first, as a share of day 0's active ids.
    pub new_ids: f64,
    /// Ids retiring each day after the first, as a share of day 0's active ids.
    pub retire: f64,
    /// Standard deviation of the daily jitter of an id's log-rank.
    pub rank_drift: f64,
}

impl Default for Drift {
    fn default() -> Self {
        Drift { days: 8, new_ids: 0.05, retire: 0.05, rank_drift: 0.3 }
    }
}

impl Drift {
    /// The options' checks.
    pub fn check(&self) -> Result<()> {
        let share = |x: f64| (0.0..=1.0).contains(&x);
        if self.days < 3 || !share(self.new_ids) || !share(self.retire) || !(self.rank_drift >= 0.0) {
            return Err(DataError::Options(format!(
                "drift needs days >= 3, new_ids and retire in [0, 1], rank_drift >= 0 (got {self:?})"
            )));
        }
        Ok(())
    }
}

/// Draws each row's ids, column by column, from the active ids of the current day.
pub(crate) struct IdStream {
    /// Per column: the active ids in popularity order, their Zipf table, and the next arrival's
    /// position in the column's shuffled order.
    active: Vec<Vec<u32>>,
    zipfs: Vec<Zipf>,
    arrivals: Vec<(Vec<u32>, usize)>,
    drift: Option<(Drift, Vec<usize>)>,
    zipf_s: f64,
    /// First row of each day after the first.
    day_starts: Vec<usize>,
    next_day: usize,
}

impl IdStream {
    /// Ids over the shuffled orders `perms` (one per column). Without drift every id is active
    /// from the start and nothing moves: the static generator's draws, unchanged.
    pub(crate) fn new(perms: Vec<Vec<u32>>, zipfs: Vec<Zipf>, zipf_s: f64, drift: Option<&Drift>, rows: usize) -> Self {
        let Some(d) = drift else {
            let n = perms.len();
            return IdStream {
                active: perms,
                zipfs,
                arrivals: vec![(vec![], 0); n],
                drift: None,
                zipf_s,
                day_starts: vec![],
                next_day: 0,
            };
        };
        let m0: Vec<usize> = perms
            .iter()
            .map(|p| ((p.len() as f64 / (1.0 + d.new_ids * (d.days - 1) as f64)) as usize).max(1))
            .collect();
        let active: Vec<Vec<u32>> = perms.iter().zip(&m0).map(|(p, &m)| p[..m].to_vec()).collect();
        let zipfs = active.iter().map(|a| Zipf::new(a.len(), zipf_s)).collect();
        let arrivals = perms.into_iter().zip(&m0).map(|(p, &m)| (p, m)).collect();
        let day_starts = day_ranges(rows, d.days).into_iter().skip(1).map(|r| r.start).collect();
        IdStream { active, zipfs, arrivals, drift: Some((d.clone(), m0)), zipf_s, day_starts, next_day: 0 }
    }

    /// Called before row `row` is drawn: moves the ids when a new day starts there.
    pub(crate) fn at_row(&mut self, row: usize, rng: &mut impl Rng) {
        if self.day_starts.get(self.next_day) == Some(&row) {
            self.next_day += 1;
            for c in 0..self.active.len() {
                self.move_column(c, rng);
            }
        }
    }

    /// The id of column `c` for the current row.
    pub(crate) fn draw(&self, c: usize, rng: &mut impl Rng) -> u32 {
        self.active[c][self.zipfs[c].sample(rng)]
    }

    /// One day's retirements, popularity jitter and arrivals in column `c`.
    fn move_column(&mut self, c: usize, rng: &mut impl Rng) {
        let Some((d, m0)) = &self.drift else { return };
        let m0 = m0[c];
        let active = &mut self.active[c];
        let retire = ((d.retire * m0 as f64) as usize).min(active.len() - 1);
        let mut gone = vec![false; active.len()];
        let mut left = retire;
        while left > 0 {
            let i = rng.random_range(0..gone.len());
            if !gone[i] {
                gone[i] = true;
                left -= 1;
            }
        }
        let mut i = 0;
        active.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
        let mut keyed: Vec<(f64, u32)> = active
            .iter()
            .enumerate()
            .map(|(rank, &id)| {
                let z: f64 = StandardNormal.sample(rng);
                (((rank + 1) as f64).ln() + d.rank_drift * z, id)
            })
            .collect();
        let (order, next) = &mut self.arrivals[c];
        let arrive = ((d.new_ids * m0 as f64) as usize).min(order.len() - *next);
        let m = (keyed.len() + arrive) as f64;
        for &id in &order[*next..*next + arrive] {
            keyed.push(((rng.random::<f64>() * m + 1.0).ln(), id));
        }
        *next += arrive;
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        *active = keyed.into_iter().map(|(_, id)| id).collect();
        self.zipfs[c] = Zipf::new(active.len(), self.zipf_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_cover_the_rows_in_order_and_the_splits_follow_them() {
        let r = day_ranges(10, 3);
        assert_eq!(r, vec![0..4, 4..7, 7..10]);
        let s = daily_splits(80, 8).unwrap();
        assert_eq!(s, Splits { train: 0..10, val: 10..40, test: 40..80 });
        assert_eq!(val_days(8), 3);
        assert!(daily_splits(80, 2).is_err() && daily_splits(2, 3).is_err());
    }

    /// New ids arrive every day and retired ones never come back. (That the static generator's
    /// rows did not change is checked by re-running stored planted cells: `cqr sweep --verify`.)
    #[test]
    fn planted_ids_arrive_and_retire_by_day() {
        use crate::synthetic::{generate_criteo, CriteoSynthConfig};
        use std::collections::HashSet;
        let base = CriteoSynthConfig { rows: 8000, cardinality_scale: 0.001, groups: Some(20), ..Default::default() };
        let drift = Drift { days: 4, new_ids: 0.2, retire: 0.2, rank_drift: 0.3 };
        let ds = generate_criteo(&CriteoSynthConfig { drift: Some(drift), ..base.clone() }).unwrap();
        assert_eq!(ds.splits, daily_splits(8000, 4).unwrap());
        assert_eq!(ds.name, "synthetic-criteo-grouped-drift");
        // The largest column: ids per day.
        let c = (0..26).max_by_key(|&c| ds.cardinalities[c]).unwrap();
        let day_ids: Vec<HashSet<u32>> =
            day_ranges(8000, 4).into_iter().map(|r| r.map(|row| ds.cat_row(row)[c]).collect()).collect();
        for d in 1..4 {
            let before: HashSet<u32> = day_ids[..d].iter().flatten().copied().collect();
            let new = day_ids[d].difference(&before).count();
            assert!(new > 0, "day {d} brings new ids");
        }
        // Retired ids: some of day 0's ids are gone by day 3 and none of those reappears.
        let gone: HashSet<u32> = day_ids[0].difference(&day_ids[1]).copied().collect();
        assert!(gone.iter().any(|id| !day_ids[2].contains(id) && !day_ids[3].contains(id)));
        assert!(!serde_json::to_string(&CriteoSynthConfig::default()).unwrap().contains("drift"));
    }
}
