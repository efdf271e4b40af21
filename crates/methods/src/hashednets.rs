//! HashedNets-style element hashing (Chen et al., ICML 2015), applied to an embedding table: every
//! (id, coordinate) entry of the virtual `vocab x dim` table is hashed into one shared array of
//! `budget` weights, with a sign hash so that colliding entries do not share a bias.
//!
//! Trainable parameters: exactly the budget. State: two hash functions (index and sign, 24 bytes
//! each); no index arrays. Keys are `id * dim + j` (64-bit), so every entry has its own hash.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::shared_array::SharedArray;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams};

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
struct EntryHash {
    dim: u64,
    index: UniversalHash,
    sign: Option<UniversalHash>,
}

impl EntryHash {
    #[inline]
    fn at(&self, id: u32, j: usize) -> (u32, f32) {
        let key = id as u64 * self.dim + j as u64;
        let s = if self.sign.is_some_and(|h| h.hash64(key) == 1) { -1.0 } else { 1.0 };
        (self.index.hash64(key) as u32, s)
    }
}

pub struct HashedNets {
    vocab: usize,
    dim: usize,
    array: SharedArray,
    hash: EntryHash,
}

impl HashedNets {
    pub const NAME: &'static str = "hashednets";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
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
        Ok(HashedNets { vocab: p.vocab, dim: p.dim, array, hash: EntryHash { dim: p.dim as u64, index, sign } })
    }
}

impl EmbeddingMethod for HashedNets {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let h = self.hash;
        self.array.forward(ids, self.dim, out, |id, j| h.at(id, j));
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let h = self.hash;
        self.array.backward(ids, self.dim, grad, |id, j| h.at(id, j));
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.array.table.param_count(),
            optimizer_state_bytes: self.array.table.state_bytes(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES * (1 + self.hash.sign.is_some() as u64),
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.array.table.weights]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
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
