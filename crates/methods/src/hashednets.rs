//! HashedNets-style element hashing (Chen et al., ICML 2015), applied to an embedding table: every
//! (id, coordinate) entry of the virtual `vocab x dim` table is hashed into one shared array of
//! `budget` weights, with a sign hash so that colliding entries do not share a bias.
//!
//! Trainable parameters: exactly the budget. State: two hash functions (index and sign, 24 bytes
//! each); no index arrays. Keys are `id * dim + j` (64-bit), so every entry has its own hash.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::shared_array::{ArrayMethod, EntryMap, SharedArray};
use crate::{MethodError, MethodParams};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashedNetsOptions {
    /// Multiply each entry by a hashed ±1.
    pub signed: bool,
}

impl Default for HashedNetsOptions {
    fn default() -> Self {
        HashedNetsOptions { signed: true }
    }
}

/// Where entry (id, j) lives and its sign.
#[derive(Clone, Copy)]
pub struct EntryHash {
    dim: u64,
    index: UniversalHash,
    sign: Option<UniversalHash>,
}

impl EntryMap for EntryHash {
    #[inline]
    fn at(&self, id: u32, j: usize) -> (u32, f32) {
        let key = id as u64 * self.dim + j as u64;
        let s = if self.sign.is_some_and(|h| h.hash64(key) == 1) { -1.0 } else { 1.0 };
        (self.index.hash64(key) as u32, s)
    }
    fn n_hashes(&self) -> u64 {
        1 + self.sign.is_some() as u64
    }
}

pub struct HashedNets;

impl HashedNets {
    pub const NAME: &'static str = "hashednets";

    pub fn new(p: &MethodParams) -> Result<ArrayMethod<EntryHash>, MethodError> {
        p.check_common(Self::NAME)?;
        let o: HashedNetsOptions = p.options(Self::NAME)?;
        let size = p.budget.min(u32::MAX as u64) as usize;
        if size == 0 {
            return Err(MethodError::Budget { method: Self::NAME.into(), budget: p.budget, reason: "needs at least 1 parameter".into() });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let index = UniversalHash::new(size, &mut rng);
        let sign = o.signed.then(|| UniversalHash::new(2, &mut rng));
        let array = SharedArray::new(size, p.optimizer, p.init_scale, &mut rng);
        Ok(ArrayMethod::new(Self::NAME, p.vocab, p.dim, array, EntryHash { dim: p.dim as u64, index, sign }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use crate::EmbeddingMethod;
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(HashedNets::new(p).unwrap())
    }

    #[test]
    fn gradients_exact_budget_and_signs() {
        for signed in [true, false] {
            check_gradients(&build, &MethodParams::new(1000, 4, 23).with_options(json!({ "signed": signed })), &[3, 5, 3, 999, 17, 250]);
        }
        for b in [1u64, 17, 3200, 99_999] {
            assert_eq!(HashedNets::new(&MethodParams::new(10_000, 16, b)).unwrap().accounting().trainable_params, b);
        }
        // Signs: about half of the entries of a large table are negated copies.
        let m = HashedNets::new(&MethodParams::new(1000, 8, 1)).unwrap();
        let mut out = vec![0.0; 8000];
        m.forward(&(0..1000).collect::<Vec<_>>(), &mut out);
        let neg = out.iter().filter(|&&v| v.to_bits() != out[0].to_bits()).count();
        assert!((3000..5000).contains(&neg), "{neg} of 8000 entries have the other sign");
        assert!(HashedNets::new(&MethodParams::new(100, 4, 0)).is_err());
    }
}
