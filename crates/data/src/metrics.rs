//! Binary classification metrics shared by the teacher scores and the training loop.

/// Mean binary cross-entropy of logits `z` against labels `y` in {0, 1}, computed stably as
/// `max(z, 0) - z y + ln(1 + e^{-|z|})`, in f64.
pub fn bce_with_logits(logits: &[f32], labels: &[f32]) -> f64 {
    assert_eq!(logits.len(), labels.len());
    if logits.is_empty() {
        return f64::NAN;
    }
    let s: f64 = logits.iter().zip(labels).map(|(&z, &y)| bce_term(z, y)).sum();
    s / logits.len() as f64
}

/// The binary cross-entropy of one logit `z` against label `y`, computed stably.
pub fn bce_term(z: f32, y: f32) -> f64 {
    let z = z as f64;
    z.max(0.0) - z * y as f64 + (-z.abs()).exp().ln_1p()
}

/// Mean binary cross-entropy of probabilities (clamped to [1e-12, 1 - 1e-12]).
pub fn bce_with_probs(probs: &[f64], labels: &[f32]) -> f64 {
    let s: f64 = probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-12, 1.0 - 1e-12);
            if y > 0.5 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    s / probs.len().max(1) as f64
}

/// Exact ROC AUC with ties counted as one half (Mann-Whitney U with mid-ranks), O(n log n).
/// Returns NaN when only one class is present.
pub fn auc<S: Copy + PartialOrd + Into<f64>>(scores: &[S], labels: &[f32]) -> f64 {
    assert_eq!(scores.len(), labels.len());
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].into().total_cmp(&scores[b].into()));
    let n_pos = labels.iter().filter(|&&y| y > 0.5).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let v: f64 = scores[idx[i]].into();
        while j + 1 < idx.len() && scores[idx[j + 1]].into() == v {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] > 0.5 {
                rank_sum_pos += mid;
            }
        }
        i = j + 1;
    }
    (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn brute_auc(s: &[f32], y: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..s.len() {
            for j in 0..s.len() {
                if y[i] > 0.5 && y[j] < 0.5 {
                    den += 1.0;
                    num += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        num / den
    }

    #[test]
    fn auc_equals_brute_force_with_ties() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20 {
            let n = 300;
            // Few distinct scores, so ties are frequent.
            let s: Vec<f32> = (0..n).map(|_| rng.random_range(0..12) as f32 / 4.0).collect();
            let y: Vec<f32> = (0..n).map(|_| if rng.random_bool(0.3) { 1.0 } else { 0.0 }).collect();
            assert!((auc(&s, &y) - brute_auc(&s, &y)).abs() < 1e-12);
        }
        assert!(auc(&[0.1f32, 0.2], &[1.0, 1.0]).is_nan());
    }

    #[test]
    fn bce_equals_direct_computation() {
        let z = [-30.0f32, -1.5, 0.0, 0.7, 25.0];
        let y = [0.0f32, 1.0, 1.0, 0.0, 1.0];
        let direct: f64 = z
            .iter()
            .zip(&y)
            .map(|(&z, &y)| {
                let p = 1.0 / (1.0 + (-(z as f64)).exp());
                -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / 5.0;
        assert!((bce_with_logits(&z, &y) - direct).abs() < 1e-9);
        let p: Vec<f64> = z.iter().map(|&z| 1.0 / (1.0 + (-(z as f64)).exp())).collect();
        assert!((bce_with_probs(&p, &y) - direct).abs() < 1e-6);
    }
}
