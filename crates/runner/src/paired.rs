//! Paired comparisons over seeds: the per-seed difference of two methods' scores, its mean and a
//! 95% confidence interval (Student t over seeds), for every budget.
//!
//! Why paired: cells that differ only in the method share the seed's data, teacher and batch
//! order (the seed drives all three; the sweep test keeps that true), so most seed-to-seed noise
//! cancels in the difference. Two overlapping mean ± std bands can hide a consistent lead; the
//! interval of the paired difference does not.
//!
//! Which cells pair: the same dataset, the same seed, the same budget (the dense tables, which
//! ignore the budget, pair with every budget), and the same values of every grid axis the two
//! lines both name (a line is a method with its labelled options and axes, without the budget:
//! [`crate::config::CellName::line`]). A difference is `A − B`: a negative test-BCE difference means A is
//! better, a positive AUC difference means A is better.

use std::collections::{BTreeMap, BTreeSet};

/// One trained cell, as the summary table holds it.
#[derive(Debug, Clone)]
pub struct Obs {
    pub dataset: String,
    /// [`crate::config::CellName::line`] of the cell's variant.
    pub line: String,
    pub method: String,
    pub budget: u64,
    pub seed: u64,
    pub params: f64,
    pub test_bce: f64,
    pub best_val_auc: f64,
}

/// Mean of paired differences with its two-sided 95% Student-t interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation of the differences.
    pub sd: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// Whether the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom; between tabulated values the
/// next smaller df is used (a slightly wider, conservative interval).
pub fn t975(df: usize) -> f64 {
    const SMALL: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => SMALL[df - 1],
        31..=39 => 2.042,
        40..=59 => 2.021,
        60..=119 => 2.000,
        120..=999 => 1.980,
        _ => 1.960,
    }
}

/// Two-sided 1% critical value of Student's t with `df` degrees of freedom (between tabulated
/// values, the one of the smaller df: conservative).
pub fn t995(df: usize) -> f64 {
    const T: [f64; 20] = [
        63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169, 3.106, 3.055, 3.012, 2.977, 2.947,
        2.921, 2.898, 2.878, 2.861, 2.845,
    ];
    match df {
        0 => f64::INFINITY,
        1..=20 => T[df - 1],
        21..=29 => 2.831,
        30..=59 => 2.750,
        60..=119 => 2.660,
        _ => 2.617,
    }
}

/// The paired interval of `diffs` (NaN bounds for fewer than two).
pub fn t_interval(diffs: &[f64]) -> Interval {
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Interval { n, mean, sd: f64::NAN, lo: f64::NAN, hi: f64::NAN };
    }
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    Interval { n, mean, sd, lo: mean - half, hi: mean + half }
}

/// One paired comparison: line `a` against line `b` at one budget.
#[derive(Debug, Clone)]
pub struct PairRow {
    pub dataset: String,
    pub a: String,
    pub b: String,
    pub budget: u64,
    /// A's mean trainable embedding parameters over the paired seeds.
    pub a_params: f64,
    /// `A − B` test BCE.
    pub bce: Interval,
    /// `A − B` best validation AUC.
    pub auc: Interval,
    /// `A − B` test BCE per paired seed, (seed, difference), in seed order.
    pub bce_by_seed: Vec<(u64, f64)>,
}

/// The summary's cells as paired-comparison observations.
pub fn observations(results: &std::path::Path) -> anyhow::Result<Vec<Obs>> {
    let df = crate::frames::read_parquet(&results.join("summary.parquet"))?;
    let (ds, me) = (crate::frames::strs(&df, "dataset")?, crate::frames::strs(&df, "method")?);
    // Summaries written before the `line` column: derive it from the variant.
    let lines = crate::frames::strs(&df, "line").or_else(|_| {
        crate::frames::strs(&df, "variant")
            .map(|v| v.iter().map(|v| crate::config::CellName::parse(v).line()).collect())
    })?;
    let (bu, se, pa, bce) = (
        crate::frames::f64s(&df, "budget")?,
        crate::frames::f64s(&df, "seed")?,
        crate::frames::f64s(&df, "params")?,
        crate::frames::f64s(&df, "test_bce")?,
    );
    let auc = crate::frames::f64s(&df, "best_val_auc").unwrap_or_else(|_| vec![f64::NAN; df.height()]);
    Ok((0..df.height())
        .map(|i| Obs {
            dataset: ds[i].clone(),
            line: lines[i].clone(),
            method: me[i].clone(),
            budget: bu[i] as u64,
            seed: se[i] as u64,
            params: pa[i],
            test_bce: bce[i],
            best_val_auc: auc[i],
        })
        .collect())
}

/// The grid labels (`key=value`) of a line key; the first part is the method.
pub fn labels(line: &str) -> BTreeMap<String, String> {
    crate::config::CellName::parse(line).labels.into_iter().collect()
}

/// Whether two lines agree on every grid label they both carry.
fn compatible(a: &str, b: &str) -> bool {
    let (la, lb) = (labels(a), labels(b));
    la.iter().all(|(k, v)| lb.get(k).is_none_or(|w| w == v))
}

/// A paired line's legend: the grid values both lines share (`groups=100 rows=11460`) when
/// that is all that names them, else `A vs B`.
pub fn pair_label(a: &str, b: &str) -> String {
    let (la, lb) = (labels(a), labels(b));
    let shared: Vec<String> =
        la.iter().filter(|(k, v)| lb.get(*k) == Some(v)).map(|(k, v)| format!("{k}={v}")).collect();
    if !shared.is_empty() && la.len() == shared.len() && lb.len() == shared.len() {
        shared.join(" ")
    } else {
        format!("{a} vs {b}")
    }
}

/// Whether a line is a quantized variant (`quantize=int8` in its name).
pub fn is_quantized(line: &str) -> bool {
    crate::config::CellName::parse(line).is_quantized()
}

/// Every paired comparison of a line against each line whose method is in `against` (the
/// reference), per dataset and budget, with at least two paired seeds. A reference line is also
/// compared with the other references (CQR against dense), never with itself.
pub fn paired(obs: &[Obs], against: &[String]) -> Vec<PairRow> {
    // (dataset, line) -> budget -> seed -> observation.
    let mut by_line: BTreeMap<(String, String), BTreeMap<u64, BTreeMap<u64, &Obs>>> = BTreeMap::new();
    let mut method_of: BTreeMap<(String, String), String> = BTreeMap::new();
    for o in obs {
        let key = (o.dataset.clone(), o.line.clone());
        by_line.entry(key.clone()).or_default().entry(o.budget).or_default().insert(o.seed, o);
        method_of.insert(key, o.method.clone());
    }
    let mut out = vec![];
    let datasets: BTreeSet<&String> = by_line.keys().map(|(d, _)| d).collect();
    for ds in datasets {
        let lines: Vec<&(String, String)> = by_line.keys().filter(|(d, _)| d == ds).collect();
        for ref_method in against {
            // The dense reference is the f32 table: its quantized variants are lines, not references.
            for bkey in
                lines.iter().filter(|k| &method_of[**k] == ref_method && !(ref_method == "dense" && is_quantized(&k.1)))
            {
                for akey in lines.iter().filter(|k| *k != bkey && compatible(&k.1, &bkey.1)) {
                    // Between two reference methods, one direction only: the earlier-listed as A
                    // (CQR − dense, not dense − CQR). Two lines of one method (an ablation's
                    // variants) are compared both ways, so each variant − base row is there.
                    let pos = |k: &(String, String)| against.iter().position(|m| m == &method_of[k]);
                    if let (Some(p), Some(q)) = (pos(akey), pos(bkey)) {
                        if p > q {
                            continue;
                        }
                    }
                    out.extend(pair_lines(
                        ds,
                        &akey.1,
                        &bkey.1,
                        &by_line[*akey],
                        &by_line[*bkey],
                        ref_method == "dense",
                    ));
                }
            }
        }
    }
    out
}

/// The same line in two results directories (`cqr compare A B`): for each dataset, line and
/// budget present in both (or A's line and its one compatible counterpart in B, see
/// [`counterpart`]), the paired per-seed difference `A − B` over the seeds both ran (at least
/// two). Which setting each side ran is the caller's to state (tuned against a shared
/// setting, one build against another).
pub fn across(a: &[Obs], b: &[Obs]) -> Vec<PairRow> {
    fn index(obs: &[Obs]) -> BTreeMap<(String, String), Budgets<'_>> {
        let mut m: BTreeMap<(String, String), Budgets> = BTreeMap::new();
        for o in obs {
            m.entry((o.dataset.clone(), o.line.clone())).or_default().entry(o.budget).or_default().insert(o.seed, o);
        }
        m
    }
    let (ia, ib) = (index(a), index(b));
    let mut out = vec![];
    for (key, a_obs) in &ia {
        if let Some(b_line) = counterpart(key, &ib) {
            out.extend(pair_lines(&key.0, &key.1, &b_line, a_obs, &ib[&(key.0.clone(), b_line.clone())], false));
        }
    }
    out
}

/// B's line for A's (dataset, line): the same line, or else the one line of B's with the same
/// dataset and method whose grid labels agree with A's wherever both name one (a grid that
/// names an axis, e.g. `cqr-groups=1000`, against a twin run at one value of it, `cqr`).
/// `None` when there is none or several.
fn counterpart<V>(key: &(String, String), b: &BTreeMap<(String, String), V>) -> Option<String> {
    if b.contains_key(key) {
        return Some(key.1.clone());
    }
    let method = |line: &str| crate::config::CellName::parse(line).method;
    let mut found =
        b.keys().filter(|(ds, line)| *ds == key.0 && method(line) == method(&key.1) && compatible(line, &key.1));
    match (found.next(), found.next()) {
        (Some((_, line)), None) => Some(line.clone()),
        _ => None,
    }
}

type Budgets<'a> = BTreeMap<u64, BTreeMap<u64, &'a Obs>>;

/// The rows of one (A, B) pair of lines: one per budget of A with at least two shared seeds.
fn pair_lines(ds: &str, a: &str, b: &str, a_obs: &Budgets, b_obs: &Budgets, b_ignores_budget: bool) -> Vec<PairRow> {
    let mut out = vec![];
    for (&budget, a_seeds) in a_obs {
        let b_seeds = if b_ignores_budget { b_obs.values().next() } else { b_obs.get(&budget) };
        let Some(b_seeds) = b_seeds else { continue };
        let shared: Vec<(u64, &Obs, &Obs)> =
            a_seeds.iter().filter_map(|(s, x)| b_seeds.get(s).map(|y| (*s, *x, *y))).collect();
        if shared.len() < 2 {
            continue;
        }
        let bce: Vec<f64> = shared.iter().map(|(_, x, y)| x.test_bce - y.test_bce).collect();
        let auc: Vec<f64> = shared.iter().map(|(_, x, y)| x.best_val_auc - y.best_val_auc).collect();
        out.push(PairRow {
            dataset: ds.to_string(),
            a: a.to_string(),
            b: b.to_string(),
            budget,
            a_params: shared.iter().map(|(_, x, _)| x.params).sum::<f64>() / shared.len() as f64,
            bce: t_interval(&bce),
            auc: t_interval(&auc),
            bce_by_seed: shared.iter().map(|(seed, _, _)| *seed).zip(bce).collect(),
        });
    }
    out
}

/// Per line: the smallest budget whose paired test-BCE difference against dense is not
/// significantly above zero (the interval's lower bound ≤ 0: "not distinguishable from dense or
/// better"), and the smallest whose interval lies at or below zero (upper bound ≤ 0: "at least as
/// good as dense, significantly or exactly"). Rows are this function's input filtered to pairs
/// against dense, sorted by budget.
#[derive(Debug, Clone)]
pub struct Reach {
    pub dataset: String,
    pub line: String,
    /// (budget, A's parameters) of the first budget with `lo ≤ 0`.
    pub reaches: Option<(u64, f64)>,
    /// (budget, A's parameters) of the first budget with `hi ≤ 0`.
    pub surely: Option<(u64, f64)>,
}

pub fn reach_dense(rows: &[PairRow], dense_lines: &BTreeSet<String>) -> Vec<Reach> {
    let mut by: BTreeMap<(String, String), Vec<&PairRow>> = BTreeMap::new();
    // Two seeds resolve nothing (t with one degree of freedom): such a row never "reaches dense".
    for r in rows.iter().filter(|r| dense_lines.contains(&r.b) && r.bce.n >= 3) {
        by.entry((r.dataset.clone(), r.a.clone())).or_default().push(r);
    }
    by.into_iter()
        .map(|((dataset, line), mut rs)| {
            rs.sort_by_key(|r| r.budget);
            let first = |ok: &dyn Fn(&Interval) -> bool| rs.iter().find(|r| ok(&r.bce)).map(|r| (r.budget, r.a_params));
            Reach { dataset, line, reaches: first(&|i| i.lo <= 0.0), surely: first(&|i| i.hi <= 0.0) }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn across_pairs_one_line_of_two_directories_by_seed() {
        let o = |line: &str, budget: u64, seed: u64, bce: f64| Obs {
            dataset: "d".into(),
            line: line.into(),
            method: line.into(),
            budget,
            seed,
            params: 1.0,
            test_bce: bce,
            best_val_auc: 0.5,
        };
        let tuned = vec![
            o("cqr", 800, 0, 0.40),
            o("cqr", 800, 1, 0.41),
            o("cqr", 800, 2, 0.42),
            o("ce", 800, 0, 0.5),
            o("cqr", 3200, 0, 0.3),
        ];
        let shared = vec![
            o("cqr", 800, 0, 0.45),
            o("cqr", 800, 1, 0.45),
            o("cqr", 800, 2, 0.46),
            o("cqr", 800, 3, 0.1),
            o("cqr", 3200, 0, 0.3),
        ];
        let rows = across(&tuned, &shared);
        // ce is in one directory only; cqr at 3,200 shares one seed (< 2); seed 3 is unpaired.
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].a.as_str(), rows[0].budget, rows[0].bce.n), ("cqr", 800, 3));
        assert!((rows[0].bce.mean - (-0.05 - 0.04 - 0.04) / 3.0).abs() < 1e-12);
    }

    /// A grid that names an axis pairs with a twin run at one value of it; an ambiguous
    /// counterpart (two values) pairs with nothing.
    #[test]
    fn across_pairs_a_line_with_its_one_compatible_counterpart() {
        let o = |line: &str, seed, bce| obs(line, line.split('-').next().unwrap(), 1600, seed, bce, 0.7);
        let tuned = vec![o("cqr", 0, 0.40), o("cqr", 1, 0.41), o("ce", 0, 0.42), o("ce", 1, 0.43)];
        let shared = vec![
            o("cqr-groups=1000", 0, 0.45),
            o("cqr-groups=1000", 1, 0.45),
            o("ce-groups=1000", 0, 0.44),
            o("ce-groups=1000", 1, 0.44),
            o("ce-groups=3000", 0, 0.44),
            o("ce-groups=3000", 1, 0.44),
        ];
        let rows = across(&tuned, &shared);
        assert_eq!(rows.len(), 1, "ce has two counterparts: ambiguous");
        assert_eq!((rows[0].a.as_str(), rows[0].b.as_str()), ("cqr", "cqr-groups=1000"));
        assert!((rows[0].bce.mean + 0.045).abs() < 1e-12);
    }

    /// One observation (tests here and in report.rs).
    pub(crate) fn obs(line: &str, method: &str, budget: u64, seed: u64, bce: f64, auc: f64) -> Obs {
        Obs {
            dataset: "d".into(),
            line: line.into(),
            method: method.into(),
            budget,
            seed,
            params: budget as f64,
            test_bce: bce,
            best_val_auc: auc,
        }
    }

    #[test]
    fn known_differences_give_known_intervals() {
        // Differences 1, 2, 3: mean 2, sd 1, half-width t(2) / sqrt(3) = 4.303 / 1.732.
        let i = t_interval(&[1.0, 2.0, 3.0]);
        assert_eq!((i.n, i.mean, i.sd), (3, 2.0, 1.0));
        let half = 4.303 / 3f64.sqrt();
        assert!((i.lo - (2.0 - half)).abs() < 1e-12 && (i.hi - (2.0 + half)).abs() < 1e-12, "{i:?}");
        assert!(!i.significant(), "the interval [-0.48, 4.48] holds zero");
        assert!(t_interval(&[1.9, 2.0, 2.1]).significant());
        // A constant difference has a zero-width interval.
        let c = t_interval(&[0.5, 0.5, 0.5, 0.5]);
        assert_eq!((c.lo, c.hi), (0.5, 0.5));
        assert!(t_interval(&[1.0]).lo.is_nan());
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(35), 2.042);
        assert_eq!(t975(5000), 1.96);
    }

    #[test]
    fn cells_pair_by_seed_budget_and_shared_axes() {
        let mut o = vec![];
        for seed in 0..3u64 {
            let noise = [0.3, -0.2, 0.05][seed as usize]; // shared by every method of a seed
            for g in ["10", "100"] {
                let shift = if g == "10" { 0.0 } else { 1.0 };
                o.push(obs(&format!("dense-groups={g}"), "dense", 0, seed, 0.40 + noise + shift, 0.8));
                for b in [64u64, 128] {
                    o.push(obs(
                        &format!("cqr-groups={g}"),
                        "cqr",
                        b,
                        seed,
                        0.41 + noise + shift - 0.001 * seed as f64,
                        0.79,
                    ));
                    o.push(obs(
                        &format!("ce-n_chunks=4-groups={g}"),
                        "ce",
                        b,
                        seed,
                        0.42 + noise + shift,
                        0.78 + 0.01 * seed as f64,
                    ));
                }
            }
        }
        let rows = paired(&o, &["cqr".into(), "dense".into()]);
        let find = |a: &str, b: &str, budget: u64| {
            rows.iter()
                .find(|r| r.a == a && r.b == b && r.budget == budget)
                .unwrap_or_else(|| panic!("{a} vs {b} at {budget}: {rows:#?}"))
        };
        // CE − CQR: 0.01 + 0.001 s for s = 0, 1, 2 (the seed noise cancels).
        let r = find("ce-n_chunks=4-groups=10", "cqr-groups=10", 64);
        let want = t_interval(&[0.010, 0.011, 0.012]);
        assert!(
            (r.bce.mean - 0.011).abs() < 1e-12
                && (r.bce.lo - want.lo).abs() < 1e-12
                && (r.bce.hi - want.hi).abs() < 1e-12,
            "{r:?}"
        );
        assert!((r.auc.mean - (-0.0)).abs() < 0.02 && r.auc.n == 3);
        // Against dense, at every budget; CQR against dense too, dense never against CQR.
        assert!(rows.iter().any(|r| r.a == "cqr-groups=100" && r.b == "dense-groups=100" && r.budget == 128));
        assert!(!rows.iter().any(|r| r.a.starts_with("dense")));
        // Lines of different group counts never pair.
        assert!(!rows.iter().any(|r| labels(&r.a).get("groups") != labels(&r.b).get("groups")));
        // Reach: CQR is 0.01 - 0.001 s worse than dense at every budget: never reaches it.
        let dense: BTreeSet<String> = ["dense-groups=10".to_string(), "dense-groups=100".to_string()].into();
        let reach = reach_dense(&rows, &dense);
        assert!(reach.iter().all(|r| r.reaches.is_none()), "{reach:?}");
        assert_eq!(
            labels("x-lr=1e-3-k=-2"),
            [("k".to_string(), "-2".to_string()), ("lr".to_string(), "1e-3".to_string())].into()
        );
    }

    /// Two seeds never "reach dense": their interval (t = 12.7) contains almost anything.
    #[test]
    fn two_seeds_resolve_nothing() {
        let mut o = vec![];
        for seed in 0..2u64 {
            o.push(obs("dense", "dense", 0, seed, 0.40 + 0.01 * seed as f64, 0.8));
            o.push(obs("cqr", "cqr", 64, seed, 0.45 + 0.02 * seed as f64, 0.8));
        }
        let rows = paired(&o, &["dense".into()]);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].bce.lo <= 0.0, "wide enough to hold 0: {:?}", rows[0].bce);
        let dense: BTreeSet<String> = ["dense".to_string()].into();
        assert!(reach_dense(&rows, &dense).iter().all(|r| r.reaches.is_none()));
        assert_eq!(crate::report::resolution(&rows[0].bce, 5), "unresolved (n = 2)");
        // Three seeds: the half-width t(2) · sd / √3.
        let i = t_interval(&[0.01, 0.02, 0.03]);
        assert_eq!(crate::report::resolution(&i, 5), format!("{:.5}", 4.303 * 0.01 / 3f64.sqrt()));
    }

    /// A quantized dense line is a line like any other: it is compared with dense (f32) and
    /// never serves as the dense reference itself.
    #[test]
    fn quantized_dense_is_not_the_reference() {
        let mut o = vec![];
        for seed in 0..3u64 {
            o.push(obs("dense", "dense", 0, seed, 0.40, 0.8));
            o.push(obs("dense-quantize=int8", "dense", 0, seed, 0.401 + 0.0001 * seed as f64, 0.8));
            o.push(obs("hashing", "hashing", 64, seed, 0.42, 0.78));
        }
        let rows = paired(&o, &["dense".into()]);
        assert!(rows.iter().all(|r| r.b == "dense"), "{rows:#?}");
        assert!(rows.iter().any(|r| r.a == "dense-quantize=int8" && r.b == "dense"));
        assert!(rows.iter().any(|r| r.a == "hashing" && r.b == "dense"));
    }
}
