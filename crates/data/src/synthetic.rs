//! Planted synthetic data: the generating model is known, so its own score is the best achievable.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Splits, TeacherScore};
use crate::days::IdStream;
use crate::error::{DataError, Result};
use crate::metrics::{auc, bce_with_probs};
use crate::skip::SkipReport;

/// Per-column cardinalities of Criteo Kaggle `train.txt` (C1..C26) after DLRM's preprocessing,
/// as printed by DLRM's `data_utils.py` for the Kaggle Display Advertising Challenge
/// (facebookresearch/dlrm, `--data-set=kaggle`; the same list appears in the CCE authors'
/// `dlrm_data_pytorch` setup and the DLRM README's Kaggle run logs).
pub const KAGGLE_CARDINALITIES: [usize; 26] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992, 5461306, 10, 5652,
    2173, 4, 7046547, 18, 15, 286181, 105, 142572,
];

/// Draws ranks 0..n with P(k) proportional to (k + 1)^-s by inverse-CDF lookup.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 0..n {
            acc += ((k + 1) as f64).powf(-s);
            cdf.push(acc);
        }
        for v in &mut cdf {
            *v /= acc;
        }
        Zipf { cdf }
    }
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn normal(rng: &mut impl Rng) -> f64 {
    StandardNormal.sample(rng)
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Train/val/test fractions shared by the generators (rows are i.i.d., so order does not matter).
const TRAIN_FRAC: f64 = 0.8;
const VAL_FRAC: f64 = 0.1;

fn splits(n: usize) -> Splits {
    let a = (n as f64 * TRAIN_FRAC).round() as usize;
    let b = (n as f64 * (TRAIN_FRAC + VAL_FRAC)).round() as usize;
    Splits { train: 0..a, val: a..b, test: b..n }
}

/// The 0/1 labels as stored.
fn labels_u8(labels: &[f32]) -> crate::column::Column<u8> {
    labels.iter().map(|&y| y as u8).collect::<Vec<u8>>().into()
}

fn teacher_score(probs: &[f64], labels: &[f32], s: &Splits) -> TeacherScore {
    let part = |r: &std::ops::Range<usize>| {
        (bce_with_probs(&probs[r.clone()], &labels[r.clone()]), auc(&probs[r.clone()], &labels[r.clone()]))
    };
    let (val_bce, val_auc) = part(&s.val);
    let (test_bce, test_auc) = part(&s.test);
    TeacherScore { val_bce, val_auc, test_bce, test_auc }
}

/// Planted matrix factorisation: label ~ Bernoulli(sigmoid(<u_user, v_item>)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GmfSynthConfig {
    pub users: usize,
    pub items: usize,
    /// Latent dimension of the teacher.
    pub latent_dim: usize,
    pub rows: usize,
    /// Zipf exponent of item popularity (0 = uniform).
    pub zipf_s: f64,
    /// Standard deviation of the teacher's logit <u, v>.
    pub logit_scale: f64,
    pub seed: u64,
    /// How (user, item) pairs are drawn. Not serialised when `independent` (the default), so
    /// earlier cell ids stay the same.
    #[serde(skip_serializing_if = "GmfSampling::is_independent")]
    pub sampling: GmfSampling,
}

/// How the planted GMF data draws its (user, item) pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GmfSampling {
    /// A uniform user and a Zipf(`zipf_s`)-popular item per row, independently.
    #[default]
    Independent,
    /// The CQR authors' recipe (`examples/dataset.py`, `make_synthetic`): every user gets the
    /// same number of rows, ⌊rows / users⌋, with distinct items drawn without replacement from
    /// softmax(<u, v> / logit_scale) (their temperature √d for unit-variance factors, where the
    /// logit's standard deviation is √d), so users meet the items they are likely to like; the
    /// rows are then shuffled and split like every other dataset here (they hold out each
    /// user's last two). `zipf_s` is unused.
    Authors,
}

impl GmfSampling {
    fn is_independent(&self) -> bool {
        *self == GmfSampling::Independent
    }
}

impl Default for GmfSynthConfig {
    fn default() -> Self {
        GmfSynthConfig {
            users: 1000,
            items: 1000,
            latent_dim: 4,
            rows: 100_000,
            zipf_s: 0.8,
            logit_scale: 3.0,
            seed: 0,
            sampling: GmfSampling::Independent,
        }
    }
}

/// The authors' pairs: ⌊rows / users⌋ distinct items per user by Gumbel top-k on
/// `<u, v> / temp` (sampling without replacement from the softmax), rows shuffled.
fn authors_pairs(
    u: &[f64],
    v: &[f64],
    k: usize,
    users: usize,
    items: usize,
    rows: usize,
    temp: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, usize)> {
    let per_user = (rows / users).min(items);
    let mut pairs = Vec::with_capacity(per_user * users);
    let mut keys: Vec<(f64, usize)> = Vec::with_capacity(items);
    for a in 0..users {
        keys.clear();
        for b in 0..items {
            let z: f64 = (0..k).map(|j| u[a * k + j] * v[b * k + j]).sum();
            let g = -(-rng.random::<f64>().max(f64::MIN_POSITIVE).ln()).ln();
            keys.push((z / temp + g, b));
        }
        keys.select_nth_unstable_by(per_user.saturating_sub(1).min(items - 1), |x, y| y.0.total_cmp(&x.0));
        pairs.extend(keys[..per_user].iter().map(|&(_, b)| (a, b)));
    }
    shuffle(&mut pairs, rng);
    pairs
}

pub fn generate_gmf(cfg: &GmfSynthConfig) -> Result<Dataset> {
    if cfg.users == 0 || cfg.items == 0 || cfg.latent_dim == 0 || cfg.rows < 10 {
        return Err(DataError::Options("gmf synthetic data needs users, items, latent_dim >= 1 and rows >= 10".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Entries N(0, sigma^2) with sigma^2 = scale / sqrt(k): <u, v> then has std `logit_scale`.
    let sigma = (cfg.logit_scale / (cfg.latent_dim as f64).sqrt()).sqrt();
    let k = cfg.latent_dim;
    let u: Vec<f64> = (0..cfg.users * k).map(|_| normal(&mut rng) * sigma).collect();
    let v: Vec<f64> = (0..cfg.items * k).map(|_| normal(&mut rng) * sigma).collect();
    let zipf = Zipf::new(cfg.items, cfg.zipf_s);
    let mut item_perm: Vec<u32> = (0..cfg.items as u32).collect();
    shuffle(&mut item_perm, &mut rng);
    // Independent rows draw user, item and label in turn (the stream the stored results used);
    // the authors' recipe draws every pair first.
    let mut pairs = match cfg.sampling {
        GmfSampling::Independent => None,
        GmfSampling::Authors => {
            Some(authors_pairs(&u, &v, k, cfg.users, cfg.items, cfg.rows, cfg.logit_scale, &mut rng).into_iter())
        }
    };
    let n = pairs.as_ref().map_or(cfg.rows, |p| p.len());
    if n < 10 {
        return Err(DataError::Options(format!(
            "gmf synthetic data: {n} rows drawn (rows / users per user); need >= 10"
        )));
    }
    let mut cats = Vec::with_capacity(n * 2);
    let mut labels = Vec::with_capacity(n);
    let mut probs = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = match pairs.as_mut() {
            Some(p) => p.next().expect("n pairs"),
            None => {
                let a = rng.random_range(0..cfg.users);
                (a, item_perm[zipf.sample(&mut rng)] as usize)
            }
        };
        let z: f64 = (0..k).map(|j| u[a * k + j] * v[b * k + j]).sum();
        let p = sigmoid(z);
        cats.push(a as u32);
        cats.push(b as u32);
        labels.push(if rng.random::<f64>() < p { 1.0 } else { 0.0 });
        probs.push(p);
    }
    let s = splits(n);
    let teacher = teacher_score(&probs, &labels, &s);
    Ok(Dataset {
        name: "synthetic-gmf".into(),
        dense_names: vec![],
        cat_names: vec!["user".into(), "item".into()],
        dense: Default::default(),
        cats: cats.into(),
        labels: labels_u8(&labels),
        cardinalities: vec![cfg.users, cfg.items],
        splits: s,
        skipped: SkipReport::default(),
        teacher: Some(teacher),
    })
}

/// Criteo-shaped planted data: 13 dense and 26 categorical features with Kaggle-like
/// cardinalities (scaled and capped) and Zipf-skewed ids; labels from a random teacher with a
/// per-id bias per column, a linear dense term and DLRM-like pairwise dot-product interactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriteoSynthConfig {
    pub rows: usize,
    /// Multiplies the Kaggle cardinalities ...
    pub cardinality_scale: f64,
    /// ... which are then capped here (and floored at 2).
    pub max_cardinality: usize,
    /// Zipf exponent of id popularity per column (Criteo's heavy tail is close to 1).
    pub zipf_s: f64,
    /// Dimension of the teacher's interaction vectors.
    pub teacher_dim: usize,
    /// Standard deviation of the summed per-id bias terms.
    pub id_signal: f64,
    /// Standard deviation of the summed pairwise interaction term.
    pub interaction_signal: f64,
    /// Logit offset (sets the click rate; -1.3 gives roughly Criteo's 25%).
    pub bias: f64,
    /// Structured teacher: the ids of a column fall into this many latent groups (uniformly at
    /// random), and an id's bias and interaction vector are its group's plus per-id noise. This is
    /// the structure CQR's clustering is built to find. `None`: every id independent (the
    /// structure-free control, the seed's teacher). Not serialised when unset (nor the noise at
    /// its default), so cache keys and cell ids of earlier configs stay the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// Share of an id's teacher variance that is its own noise rather than its group's
    /// (0 = ids of a group are identical, 1 = no structure). The total variance, and so the
    /// signal strength, does not depend on it. Default 0.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_noise: Option<f64>,
    /// Ids that move from day to day (new ids arrive, old ones retire, popularity drifts), for
    /// the day-by-day protocol; the splits are then [`crate::days::daily_splits`]. `None`: every
    /// id is active throughout (not serialised, so earlier cache keys and cell ids stay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::days::Drift>,
    pub seed: u64,
}

impl Default for CriteoSynthConfig {
    fn default() -> Self {
        CriteoSynthConfig {
            rows: 100_000,
            cardinality_scale: 0.01,
            max_cardinality: 20_000,
            zipf_s: 1.05,
            teacher_dim: 4,
            id_signal: 1.5,
            interaction_signal: 1.0,
            bias: -1.3,
            groups: None,
            group_noise: None,
            drift: None,
            seed: 0,
        }
    }
}

impl CriteoSynthConfig {
    pub fn cardinalities(&self) -> Vec<usize> {
        KAGGLE_CARDINALITIES
            .iter()
            .map(|&c| ((c as f64 * self.cardinality_scale).round() as usize).clamp(2, self.max_cardinality.max(2)))
            .collect()
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut impl Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Teacher parameters of one column of `n` ids in `g` latent groups: per id, a bias (std
/// `bias_std`) and a `k`-vector (std `f_std` per coordinate), each `sqrt(1 - noise)` times its
/// group's value plus `sqrt(noise)` times its own.
fn grouped_params(
    n: usize,
    g: usize,
    k: usize,
    noise: f64,
    bias_std: f64,
    f_std: f64,
    rng: &mut impl Rng,
) -> (Vec<f64>, Vec<f64>) {
    let g = g.min(n);
    let (a, b) = ((1.0 - noise).sqrt(), noise.sqrt());
    let gb: Vec<f64> = (0..g).map(|_| normal(rng) * bias_std).collect();
    let gv: Vec<f64> = (0..g * k).map(|_| normal(rng) * f_std).collect();
    let mut bias = Vec::with_capacity(n);
    let mut vecs = Vec::with_capacity(n * k);
    for _ in 0..n {
        let grp = rng.random_range(0..g);
        bias.push(a * gb[grp] + b * normal(rng) * bias_std);
        vecs.extend((0..k).map(|t| a * gv[grp * k + t] + b * normal(rng) * f_std));
    }
    (bias, vecs)
}

/// The options' checks; returns the group noise (default 0.1).
fn check_criteo(cfg: &CriteoSynthConfig) -> Result<f64> {
    if cfg.rows < 10 || cfg.teacher_dim == 0 || !(cfg.cardinality_scale > 0.0) {
        return Err(DataError::Options(
            "criteo synthetic data needs rows >= 10, teacher_dim >= 1, cardinality_scale > 0".into(),
        ));
    }
    let group_noise = cfg.group_noise.unwrap_or(0.1);
    if cfg.groups == Some(0) || !(0.0..=1.0).contains(&group_noise) {
        return Err(DataError::Options(format!(
            "criteo synthetic data: groups must be >= 1 and group_noise in [0, 1] (got {:?}, {})",
            cfg.groups, group_noise
        )));
    }
    if let Some(d) = &cfg.drift {
        d.check()?;
        crate::days::daily_splits(cfg.rows, d.days)?;
    }
    Ok(group_noise)
}

pub fn generate_criteo(cfg: &CriteoSynthConfig) -> Result<Dataset> {
    let group_noise = check_criteo(cfg)?;
    const C: usize = 26;
    const D: usize = 13;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let cards = cfg.cardinalities();
    let k = cfg.teacher_dim;
    // Per-id scalar biases: their sum over 26 columns has std `id_signal`.
    let bias_std = cfg.id_signal / (C as f64).sqrt();
    // Interaction vectors: sum over 325 pairs of <f_i, f_j> (each of variance k sigma^4) has std
    // `interaction_signal`.
    let pairs = (C * (C - 1) / 2) as f64;
    let f_std = (cfg.interaction_signal / (pairs * k as f64).sqrt()).sqrt();
    let (id_bias, id_vec): (Vec<Vec<f64>>, Vec<Vec<f64>>) = match cfg.groups {
        None => (
            cards.iter().map(|&n| (0..n).map(|_| normal(&mut rng) * bias_std).collect()).collect(),
            cards.iter().map(|&n| (0..n * k).map(|_| normal(&mut rng) * f_std).collect()).collect(),
        ),
        Some(g) => cards.iter().map(|&n| grouped_params(n, g, k, group_noise, bias_std, f_std, &mut rng)).unzip(),
    };
    let dense_w: Vec<f64> = (0..D).map(|_| normal(&mut rng) * 0.5 / (D as f64).sqrt()).collect();
    // Dense features look like ln(1 + count): |N(0, 1)| * scale, with per-feature scales.
    let dense_scale: Vec<f64> = (0..D).map(|_| 0.5 + 2.5 * rng.random::<f64>()).collect();
    let zipfs: Vec<Zipf> = cards.iter().map(|&n| Zipf::new(n, cfg.zipf_s)).collect();
    let perms: Vec<Vec<u32>> = cards
        .iter()
        .map(|&n| {
            let mut p: Vec<u32> = (0..n as u32).collect();
            shuffle(&mut p, &mut rng);
            p
        })
        .collect();
    let mut dense = Vec::with_capacity(cfg.rows * D);
    let mut cats = Vec::with_capacity(cfg.rows * C);
    let mut labels = Vec::with_capacity(cfg.rows);
    let mut probs = Vec::with_capacity(cfg.rows);
    let mut fsum = vec![0.0; k];
    let mut ids = IdStream::new(perms, zipfs, cfg.zipf_s, cfg.drift.as_ref(), cfg.rows);
    for row in 0..cfg.rows {
        ids.at_row(row, &mut rng);
        let mut z = cfg.bias;
        for j in 0..D {
            let x = normal(&mut rng).abs() * dense_scale[j];
            dense.push(x as f32);
            z += dense_w[j] * (x - 0.8 * dense_scale[j]);
        }
        fsum.iter_mut().for_each(|v| *v = 0.0);
        let mut fsq = 0.0;
        for c in 0..C {
            let id = ids.draw(c, &mut rng) as usize;
            cats.push(id as u32);
            z += id_bias[c][id];
            for t in 0..k {
                let f = id_vec[c][id * k + t];
                fsum[t] += f;
                fsq += f * f;
            }
        }
        // sum_{i<j} <f_i, f_j> = (|sum f|^2 - sum |f|^2) / 2
        z += (fsum.iter().map(|v| v * v).sum::<f64>() - fsq) / 2.0;
        let p = sigmoid(z);
        probs.push(p);
        labels.push(if rng.random::<f64>() < p { 1.0 } else { 0.0 });
    }
    Ok(criteo_dataset(cfg, cards, dense, cats, &labels, &probs))
}

/// The planted Criteo-shaped rows as a dataset with its splits and the teacher's own score.
fn criteo_dataset(
    cfg: &CriteoSynthConfig,
    cards: Vec<usize>,
    dense: Vec<f32>,
    cats: Vec<u32>,
    labels: &[f32],
    probs: &[f64],
) -> Dataset {
    let s = match &cfg.drift {
        Some(d) => crate::days::daily_splits(cfg.rows, d.days).expect("checked before generating"),
        None => splits(cfg.rows),
    };
    let teacher = teacher_score(probs, labels, &s);
    Dataset {
        name: format!(
            "synthetic-criteo{}{}",
            if cfg.groups.is_some() { "-grouped" } else { "" },
            if cfg.drift.is_some() { "-drift" } else { "" }
        ),
        dense_names: (1..=13).map(|i| format!("I{i}")).collect(),
        cat_names: (1..=26).map(|i| format!("C{i}")).collect(),
        dense: dense.into(),
        cats: cats.into(),
        labels: labels_u8(labels),
        cardinalities: cards,
        splits: s,
        skipped: SkipReport::default(),
        teacher: Some(teacher),
    }
}

/// Writes `rows` lines of Criteo-format TSV (label, 13 integers, 26 8-digit hex values) with a
/// planted signal: each column's ids are Zipf(1.1)-distributed over `vocab` values, and the label
/// is Bernoulli(sigmoid(sum of a fixed per-(column, id) weight - 1.2)). About 5% of integers and 3%
/// of categorical values are empty. For out-of-core tests and the ingest benchmark: the file is
/// raw text, as Criteo ships it. Returns the bytes written.
pub fn write_criteo_tsv(path: &std::path::Path, rows: u64, vocab: usize, seed: u64) -> Result<u64> {
    use std::io::Write;
    if vocab == 0 {
        return Err(DataError::Options("write_criteo_tsv needs vocab >= 1".into()));
    }
    let io = |e| DataError::Write { path: path.into(), error: e };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let zipf = Zipf::new(vocab, 1.1);
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9e3779b97f4a7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let hex = b"0123456789abcdef";
    let mut line = Vec::with_capacity(512);
    let mut bytes = 0u64;
    for _ in 0..rows {
        line.clear();
        line.extend_from_slice(b"0");
        let mut z = -1.2;
        for _ in 0..13 {
            line.push(b'\t');
            if rng.random::<f64>() >= 0.05 {
                let v = (rng.random::<f64>() * 6.0).exp() as u64;
                line.extend_from_slice(v.to_string().as_bytes());
            }
        }
        for c in 0..26u64 {
            line.push(b'\t');
            if rng.random::<f64>() >= 0.03 {
                let id = zipf.sample(&mut rng) as u64;
                let h = mix(c << 32 | id ^ seed << 48);
                z += ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.6;
                let key = (h >> 32) as u32;
                for k in (0..8).rev() {
                    line.push(hex[(key >> (4 * k)) as usize & 15]);
                }
            }
        }
        if rng.random::<f64>() < sigmoid(z) {
            line[0] = b'1';
        }
        line.push(b'\n');
        w.write_all(&line).map_err(io)?;
        bytes += line.len() as u64;
    }
    w.flush().map_err(io)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteo_tsv_parses_and_is_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tsv"), dir.path().join("b.tsv"));
        let n = write_criteo_tsv(&a, 500, 1000, 7).unwrap();
        assert_eq!(n, std::fs::metadata(&a).unwrap().len());
        write_criteo_tsv(&b, 500, 1000, 7).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let src = crate::TabularSource { format: crate::TabularFormat::Criteo, train: vec![a], test: None };
        let ds = crate::load_tabular(&src, &Default::default()).unwrap();
        assert_eq!(ds.n_rows(), 500);
        let rate = ds.label_rate(0..500);
        assert!(rate > 0.1 && rate < 0.5, "label rate {rate}");
    }

    #[test]
    fn criteo_shapes_cardinalities_and_teacher() {
        let cfg = CriteoSynthConfig { rows: 20_000, ..Default::default() };
        let ds = generate_criteo(&cfg).unwrap();
        ds.validate().unwrap();
        assert_eq!(ds.n_rows(), 20_000);
        assert_eq!((ds.n_dense(), ds.n_cat()), (13, 26));
        assert_eq!(ds.cardinalities[2], 20_000, "C3 capped");
        assert_eq!(ds.cardinalities[8], 2, "C9 floored at 2");
        assert_eq!(ds.cardinalities[0], 15, "C1 = round(1460 * 0.01)");
        let rate = ds.label_rate(0..ds.n_rows());
        assert!((0.1..0.45).contains(&rate), "click rate {rate}");
        let t = ds.teacher.unwrap();
        // The teacher's score is recomputed independently from the labels and its own probabilities
        // inside the generator; here: it must be informative and consistent with the click rate.
        assert!(t.test_auc > 0.7 && t.test_auc < 0.95, "{t:?}");
        let base = -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln());
        assert!(t.test_bce < base, "teacher BCE {} should beat the constant predictor {base}", t.test_bce);
        // Zipf skew: the most frequent id of C3 is far above uniform.
        let mut counts = vec![0usize; ds.cardinalities[2]];
        for r in 0..ds.n_rows() {
            counts[ds.cat_row(r)[2] as usize] += 1;
        }
        assert!(*counts.iter().max().unwrap() > 50 * ds.n_rows() / ds.cardinalities[2]);
        // Same seed, same data; another seed, other data.
        assert_eq!(generate_criteo(&cfg).unwrap(), ds);
        assert_ne!(generate_criteo(&CriteoSynthConfig { seed: 1, ..cfg }).unwrap().labels, ds.labels);
    }

    #[test]
    fn grouped_teacher_shares_parameters_within_groups() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // noise 0: ids of a group are identical, so at most 7 distinct biases.
        let (b, v) = grouped_params(1000, 7, 3, 0.0, 1.0, 1.0, &mut rng);
        let mut distinct: Vec<u64> = b.iter().map(|x| x.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() <= 7 && distinct.len() >= 5, "{} distinct", distinct.len());
        assert_eq!(v.len(), 3000);
        // noise 0.5: total variance stays ~1 (the signal strength does not depend on the knob).
        let (b, _) = grouped_params(200_000, 1000, 1, 0.5, 1.0, 1.0, &mut rng);
        let var = b.iter().map(|x| x * x).sum::<f64>() / b.len() as f64;
        assert!((var - 1.0).abs() < 0.1, "variance {var}");
        let cfg = CriteoSynthConfig { rows: 5000, groups: Some(50), ..Default::default() };
        let ds = generate_criteo(&cfg).unwrap();
        assert!(ds.teacher.unwrap().test_auc > 0.7);
        assert!(generate_criteo(&CriteoSynthConfig { groups: Some(0), ..cfg.clone() }).is_err());
        assert!(generate_criteo(&CriteoSynthConfig { group_noise: Some(1.5), ..cfg }).is_err());
    }

    #[test]
    fn gmf_shapes_and_teacher() {
        let cfg = GmfSynthConfig { users: 50, items: 70, rows: 5000, ..Default::default() };
        let ds = generate_gmf(&cfg).unwrap();
        ds.validate().unwrap();
        assert_eq!(ds.cardinalities, vec![50, 70]);
        assert_eq!(ds.splits.train.len(), 4000);
        assert!(ds.teacher.unwrap().test_auc > 0.8);
    }

    #[test]
    fn the_authors_recipe_gives_each_user_the_same_count_of_distinct_likely_items() {
        let cfg = GmfSynthConfig {
            users: 40,
            items: 60,
            latent_dim: 8,
            rows: 40 * 25,
            logit_scale: 8f64.sqrt(),
            sampling: GmfSampling::Authors,
            ..Default::default()
        };
        let ds = generate_gmf(&cfg).unwrap();
        ds.validate().unwrap();
        let rows: Vec<(u32, u32)> = (0..ds.n_rows()).map(|r| (ds.cats[2 * r], ds.cats[2 * r + 1])).collect();
        assert_eq!(rows.len(), 1000);
        for user in 0..40u32 {
            let mut items: Vec<u32> = rows.iter().filter(|p| p.0 == user).map(|p| p.1).collect();
            assert_eq!(items.len(), 25, "user {user}");
            items.sort_unstable();
            items.dedup();
            assert_eq!(items.len(), 25, "user {user}: items repeat");
        }
        // Items are drawn towards high <u, v>: more positives than under independent draws.
        let pos = |d: &crate::Dataset| (0..d.n_rows()).map(|r| d.labels[r] as f64).sum::<f64>() / d.n_rows() as f64;
        let indep =
            generate_gmf(&GmfSynthConfig { sampling: GmfSampling::Independent, zipf_s: 0.0, ..cfg.clone() }).unwrap();
        assert!(pos(&ds) > pos(&indep) + 0.1, "{} vs {}", pos(&ds), pos(&indep));
        // Rows are shuffled: the training split holds every user.
        let train_users: std::collections::HashSet<u32> = rows[..ds.splits.train.len()].iter().map(|p| p.0).collect();
        assert_eq!(train_users.len(), 40);
        // The default serialises as before.
        let json = serde_json::to_string(&GmfSynthConfig::default()).unwrap();
        assert!(!json.contains("sampling"), "{json}");
    }
}
