//! The `tune:` section: each method × budget at its own setting, chosen on validation.
//!
//! ```yaml
//! tune:
//!   space:                          # any scalar key of a cell, as a dotted path
//!     training.optimizer: [sgd, adam, adagrad]
//!     training.lr: [0.1, 0.01, 0.001]         # a list, or { log_uniform: [1e-4, 0.3] }
//!   methods:                        # extra keys for one method (its options)
//!     cqr: { method.options.n_chunks: [2, 4] }
//!   strategy: grid                  # or random (then `trials` is required)
//!   trials: 9                       # grid: a seeded subset of this size; random: samples
//!   sample_seed: 0
//!   select: val_bce                 # or val_auc (best validation AUC); never a test metric
//!   tuning_seeds: [100, 101]        # disjoint from `seeds`, which re-run the pick (default 5)
//!   halving: { eta: 3, min_fraction: 0.34 }   # optional successive halving
//! ```
//!
//! Every method × budget gets the same number of trials (refused otherwise). Random ranges are
//! rounded to 3 significant digits, so names stay readable and a resumed sweep rebuilds the
//! same cells. The shared space is sampled once, so every method sees the same shared
//! settings (paired trials); a method's extra keys are drawn from a stream of its own.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_yaml::Value;

/// One key's domain.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    Values(Vec<Value>),
    LogUniform(f64, f64),
    Uniform(f64, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Grid,
    Random,
}

/// The validation metric a pick is made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectKey {
    /// Validation BCE of the run's best evaluation (lower is better).
    ValBce,
    /// Best validation AUC over the run's evaluations (higher is better).
    ValAuc,
}

impl SelectKey {
    pub fn name(self) -> &'static str {
        match self {
            SelectKey::ValBce => "val_bce",
            SelectKey::ValAuc => "val_auc",
        }
    }
    /// `a` is better than `b` (NaN, a diverged trial, is worse than anything).
    pub fn better(self, a: f64, b: f64) -> bool {
        match (a.is_nan(), b.is_nan()) {
            (true, _) => false,
            (false, true) => true,
            _ => match self {
                SelectKey::ValBce => a < b,
                SelectKey::ValAuc => a > b,
            },
        }
    }
}

/// Successive halving: rungs at `min_fraction · eta^k` of the run (k = 0, 1, ... while below 1),
/// keeping the best `⌈n / eta⌉` trials at each.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halving {
    pub eta: usize,
    pub min_fraction: f64,
}

impl Halving {
    /// The fractions of the partial runs, ascending, each in (0, 1).
    pub fn rungs(&self) -> Vec<f64> {
        let mut out = vec![];
        let mut f = self.min_fraction;
        while f < 1.0 - 1e-9 {
            out.push((f * 1e6).round() / 1e6);
            f *= self.eta as f64;
        }
        out
    }
}

/// A trial: the value of each tuned key (dotted path → value), in the space's key order.
pub type Setting = Vec<(String, Value)>;

#[derive(Debug, Clone, PartialEq)]
pub struct TuneSpec {
    pub space: Vec<(String, Domain)>,
    pub per_method: BTreeMap<String, Vec<(String, Domain)>>,
    pub strategy: Strategy,
    pub trials: Option<usize>,
    pub sample_seed: u64,
    pub select: SelectKey,
    pub tuning_seeds: Vec<u64>,
    pub halving: Option<Halving>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTune {
    space: serde_yaml::Mapping,
    #[serde(default)]
    methods: BTreeMap<String, serde_yaml::Mapping>,
    #[serde(default = "grid")]
    strategy: Strategy,
    #[serde(default)]
    trials: Option<usize>,
    #[serde(default)]
    sample_seed: u64,
    #[serde(default = "val_bce")]
    select: String,
    #[serde(default = "default_tuning_seeds")]
    tuning_seeds: Vec<u64>,
    #[serde(default)]
    halving: Option<Halving>,
}

fn grid() -> Strategy {
    Strategy::Grid
}
fn val_bce() -> String {
    "val_bce".into()
}
fn default_tuning_seeds() -> Vec<u64> {
    vec![1000, 1001]
}

/// The final seeds of a tuned experiment when the file gives none: 5, as BARS re-runs a pick.
pub const DEFAULT_FINAL_SEEDS: [u64; 5] = [0, 1, 2, 3, 4];

/// Keys a trial may set: the cell's training and model sections and the method's options.
const TUNABLE_PREFIXES: [&str; 4] = ["training.", "model.", "method.options.", "method.init_scale"];

fn domain(key: &str, v: &Value) -> Result<Domain> {
    let pair = |x: &Value| -> Result<(f64, f64)> {
        match x.as_sequence().map(|s| s.iter().map(|v| v.as_f64()).collect::<Option<Vec<f64>>>()) {
            Some(Some(p)) if p.len() == 2 && p[0] < p[1] => Ok((p[0], p[1])),
            _ => bail!("tune.space.{key}: a range is [low, high] with low < high"),
        }
    };
    match v {
        Value::Sequence(s) if !s.is_empty() => {
            if s.iter().any(|x| x.is_sequence() || x.is_mapping()) {
                bail!("tune.space.{key}: values must be scalars");
            }
            Ok(Domain::Values(s.clone()))
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, x) = m.iter().next().expect("one entry");
            match k.as_str() {
                Some("log_uniform") => {
                    let (a, b) = pair(x)?;
                    if a <= 0.0 {
                        bail!("tune.space.{key}: log_uniform needs a positive low end");
                    }
                    Ok(Domain::LogUniform(a, b))
                }
                Some("uniform") => pair(x).map(|(a, b)| Domain::Uniform(a, b)),
                _ => bail!("tune.space.{key}: expected a list of values, {{ log_uniform: [low, high] }} or {{ uniform: [low, high] }}"),
            }
        }
        _ => bail!("tune.space.{key}: expected a non-empty list of values or a range"),
    }
}

fn keys(m: &serde_yaml::Mapping, what: &str) -> Result<Vec<(String, Domain)>> {
    let mut out = vec![];
    for (k, v) in m {
        let k = k.as_str().ok_or_else(|| anyhow!("{what}: keys must be strings"))?;
        if !TUNABLE_PREFIXES.iter().any(|p| k.starts_with(p)) || k.ends_with('.') {
            bail!("{what}.{k}: a tuned key is a cell path starting with training., model., method.options. or method.init_scale");
        }
        out.push((k.to_string(), domain(k, v)?));
    }
    Ok(out)
}

impl TuneSpec {
    /// Parses and checks the section; `final_seeds` are the experiment's `seeds`.
    pub fn parse(v: &Value, final_seeds: &[u64]) -> Result<TuneSpec> {
        let raw: RawTune =
            serde_path_to_error::deserialize(v.clone()).map_err(|e| anyhow!("tune.{}: {}", e.path(), e.inner()))?;
        let select = match raw.select.as_str() {
            "val_bce" => SelectKey::ValBce,
            "val_auc" | "best_val_auc" => SelectKey::ValAuc,
            s if s.starts_with("test") => bail!("tune.select: `{s}` is a test metric; a pick made on test leaks into the comparison (use val_bce or val_auc)"),
            s => bail!("tune.select: unknown metric `{s}` (val_bce or val_auc)"),
        };
        let space = keys(&raw.space, "tune.space")?;
        if space.is_empty() {
            bail!("tune.space: nothing to tune");
        }
        let mut per_method = BTreeMap::new();
        for (m, ks) in &raw.methods {
            if !cqr_methods::method_names().contains(&m.as_str()) {
                bail!("tune.methods.{m}: unknown method");
            }
            let extra = keys(ks, &format!("tune.methods.{m}"))?;
            if let Some((k, _)) = extra.iter().find(|(k, _)| space.iter().any(|(s, _)| s == k)) {
                bail!("tune.methods.{m}.{k}: already in tune.space");
            }
            per_method.insert(m.clone(), extra);
        }
        if raw.tuning_seeds.is_empty() {
            bail!("tune.tuning_seeds: at least one seed");
        }
        if let Some(s) = raw.tuning_seeds.iter().find(|s| final_seeds.contains(s)) {
            bail!("tune.tuning_seeds: seed {s} is also a final seed; the pick must be re-run on seeds it was not chosen on");
        }
        if raw.strategy == Strategy::Random && raw.trials.is_none() {
            bail!("tune.trials: strategy random needs a number of trials");
        }
        if raw.trials == Some(0) {
            bail!("tune.trials: at least one trial");
        }
        if let Some(h) = raw.halving {
            if h.eta < 2 || !(h.min_fraction > 0.0 && h.min_fraction < 1.0) {
                bail!("tune.halving: eta >= 2 and min_fraction in (0, 1)");
            }
        }
        let spec = TuneSpec {
            space,
            per_method,
            strategy: raw.strategy,
            trials: raw.trials,
            sample_seed: raw.sample_seed,
            select,
            tuning_seeds: raw.tuning_seeds,
            halving: raw.halving,
        };
        if spec.strategy == Strategy::Grid {
            for (k, d) in spec.space.iter().chain(spec.per_method.values().flatten()) {
                if !matches!(d, Domain::Values(_)) {
                    bail!("tune.space.{k}: a range needs strategy: random (grid takes lists)");
                }
            }
        }
        // The shared trials exist (enough grid points, enough distinct random draws).
        spec.trials_for("")?;
        Ok(spec)
    }

    /// The trials of `method`: the same count for every method (checked by [`Self::check_equal`]).
    pub fn trials_for(&self, method: &str) -> Result<Vec<Setting>> {
        let extra = self.per_method.get(method).map(Vec::as_slice).unwrap_or(&[]);
        let shared = self.settings(&self.space, self.sample_seed)?;
        if extra.is_empty() {
            return Ok(shared);
        }
        let own_seed = self.sample_seed ^ cqr_data::records::fnv1a64(method.as_bytes());
        Ok(match self.strategy {
            // Random: trial i takes the i-th shared and the i-th own draw (pairs the shared part).
            // (The own draws may repeat: the shared part already makes each trial distinct.)
            Strategy::Random => {
                let own = sample(extra, shared.len(), own_seed, false)?;
                shared
                    .into_iter()
                    .zip(own)
                    .map(|(mut a, b)| {
                        a.extend(b);
                        a
                    })
                    .collect()
            }
            Strategy::Grid => {
                let full = product(&self.space.iter().chain(extra).cloned().collect::<Vec<_>>());
                self.subset(full, own_seed)?
            }
        })
    }

    /// Every method gets the same number of trials.
    pub fn check_equal(&self, methods: &[&str]) -> Result<usize> {
        let mut n: Option<(usize, &str)> = None;
        for m in methods {
            let k = self.trials_for(m)?.len();
            match n {
                Some((k0, m0)) if k0 != k => bail!("tune: {m0} gets {k0} trials but {m} gets {k}; every method needs the same trial budget (give tune.trials, or equal-sized method spaces)"),
                _ => n = Some((k, m)),
            }
        }
        Ok(n.map(|x| x.0).unwrap_or(0))
    }

    fn settings(&self, space: &[(String, Domain)], seed: u64) -> Result<Vec<Setting>> {
        match self.strategy {
            Strategy::Grid => self.subset(product(space), seed),
            Strategy::Random => sample(space, self.trials.expect("checked"), seed, true),
        }
    }

    /// Grid: all points, or a seeded subset of `trials` of them.
    fn subset(&self, mut all: Vec<Setting>, seed: u64) -> Result<Vec<Setting>> {
        let Some(n) = self.trials else { return Ok(all) };
        if n > all.len() {
            bail!("tune.trials: {n} trials, but the grid has only {} points", all.len());
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for i in (1..all.len()).rev() {
            all.swap(i, rng.random_range(0..=i));
        }
        all.truncate(n);
        Ok(all)
    }
}

/// Every combination of the listed values, in order (the last key varies fastest).
fn product(space: &[(String, Domain)]) -> Vec<Setting> {
    let mut out: Vec<Setting> = vec![vec![]];
    for (k, d) in space {
        let Domain::Values(vs) = d else { continue };
        out = out
            .into_iter()
            .flat_map(|s| {
                vs.iter().map(move |v| {
                    let mut s = s.clone();
                    s.push((k.clone(), v.clone()));
                    s
                })
            })
            .collect();
    }
    out
}

/// `n` random settings, distinct when `distinct`.
fn sample(space: &[(String, Domain)], n: usize, seed: u64, distinct: bool) -> Result<Vec<Setting>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out: Vec<Setting> = vec![];
    let mut tries = 0;
    while out.len() < n {
        tries += 1;
        if tries > 100 * n + 100 {
            bail!("tune: the space has fewer than {n} distinct settings; lower tune.trials");
        }
        let s: Setting = space.iter().map(|(k, d)| (k.clone(), draw(d, &mut rng))).collect();
        if !distinct || !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

fn draw(d: &Domain, rng: &mut rand_chacha::ChaCha8Rng) -> Value {
    let x = match *d {
        Domain::Values(ref vs) => return vs[rng.random_range(0..vs.len())].clone(),
        Domain::LogUniform(a, b) => (a.ln() + rng.random::<f64>() * (b.ln() - a.ln())).exp(),
        Domain::Uniform(a, b) => a + rng.random::<f64>() * (b - a),
    };
    Value::Number(round3(x).into())
}

/// Three significant digits.
pub fn round3(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let e = x.abs().log10().floor() as i32 - 2;
    let p = 10f64.powi(e);
    // Through text, so 0.0123 is the shortest float that prints as 0.0123.
    format!("{:.*}", (-e).max(0) as usize, (x / p).round() * p).parse().unwrap_or(x)
}

/// `key=value` labels of a setting (the last path segment as the key).
pub fn setting_label(s: &Setting) -> String {
    s.iter()
        .map(|(k, v)| format!("{}={}", k.rsplit('.').next().unwrap_or(k), value_text(v)))
        .collect::<Vec<_>>()
        .join("-")
}

pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str, seeds: &[u64]) -> Result<TuneSpec> {
        TuneSpec::parse(&serde_yaml::from_str(text).unwrap(), seeds)
    }

    #[test]
    fn grid_trials_are_the_product_and_equal_per_method() {
        let s =
            spec("space:\n  training.optimizer: [sgd, adam]\n  training.lr: [0.1, 0.01, 0.001]\n", &[0, 1]).unwrap();
        let t = s.trials_for("cqr").unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(setting_label(&t[1]), "optimizer=sgd-lr=0.01");
        assert_eq!(s.check_equal(&["cqr", "ce"]).unwrap(), 6);
        let s =
            spec("space:\n  training.lr: [0.1, 0.01]\nmethods:\n  cqr: { method.options.n_chunks: [2, 4] }\n", &[0])
                .unwrap();
        let e = s.check_equal(&["ce", "cqr"]).unwrap_err().to_string();
        assert!(e.contains("same trial budget"), "{e}");
        let s = spec(
            "space:\n  training.lr: [0.1, 0.01]\nmethods:\n  cqr: { method.options.n_chunks: [2, 4] }\ntrials: 2\n",
            &[0],
        )
        .unwrap();
        assert_eq!(s.check_equal(&["ce", "cqr"]).unwrap(), 2);
    }

    #[test]
    fn random_trials_are_seeded_rounded_and_shared_across_methods() {
        let text = "space:\n  training.lr: { log_uniform: [0.0001, 0.3] }\n  training.optimizer: [sgd, adam, adagrad]\nmethods:\n  cqr: { method.options.n_chunks: [2, 4] }\nstrategy: random\ntrials: 5\n";
        let s = spec(text, &[0]).unwrap();
        let (a, b) = (s.trials_for("ce").unwrap(), s.trials_for("cqr").unwrap());
        assert_eq!(a, spec(text, &[0]).unwrap().trials_for("ce").unwrap(), "seeded");
        assert_eq!(a.len(), 5);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x[..], y[..2], "the shared keys are the same draws");
            let lr = x[0].1.as_f64().unwrap();
            assert!((1e-4..=0.3).contains(&lr) && lr == round3(lr), "{lr}");
        }
        assert_ne!(a, spec(&format!("{text}sample_seed: 7\n"), &[0]).unwrap().trials_for("ce").unwrap());
    }

    #[test]
    fn bad_sections_are_refused() {
        let bad = |t: &str, want: &str| {
            let e = spec(t, &[0, 1]).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        };
        bad("space:\n  training.lr: [0.1]\nselect: test_bce\n", "test metric");
        bad("space:\n  training.lr: [0.1]\ntuning_seeds: [1, 5]\n", "also a final seed");
        bad("space:\n  training.lr: { log_uniform: [0.001, 0.1] }\n", "strategy: random");
        bad("space:\n  training.lr: [0.1]\nstrategy: random\n", "needs a number of trials");
        bad("space:\n  lr: [0.1]\n", "cell path");
        bad("space:\n  training.lr: [0.1]\nhalving: { eta: 1, min_fraction: 0.3 }\n", "eta");
        bad("space:\n  training.lr: [0.1]\nbogus: 1\n", "bogus");
        bad("space:\n  training.lr: [0.1, 0.2]\ntrials: 3\n", "only 2 points");
        bad("space:\n  training.optimizer: [sgd]\nstrategy: random\ntrials: 2\n", "fewer than 2 distinct");
    }

    #[test]
    fn halving_rungs_and_rounding() {
        assert_eq!(Halving { eta: 3, min_fraction: 1.0 / 9.0 }.rungs(), vec![0.111111, 0.333333]);
        assert_eq!(Halving { eta: 2, min_fraction: 0.5 }.rungs(), vec![0.5]);
        assert_eq!(round3(0.012345), 0.0123);
        assert_eq!(round3(123.45), 123.0);
        assert!(
            SelectKey::ValBce.better(0.4, 0.5)
                && SelectKey::ValAuc.better(0.6, 0.5)
                && !SelectKey::ValBce.better(f64::NAN, 0.5)
                && SelectKey::ValBce.better(0.5, f64::NAN)
        );
    }
}
