//! Seeded universal hashing: h(x) = ((a x + b) mod p) mod m with p = 2^61 - 1 (Carter-Wegman).

use rand::Rng;

const P: u64 = (1 << 61) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniversalHash {
    a: u64,
    b: u64,
    m: u64,
}

impl UniversalHash {
    pub fn new(m: usize, rng: &mut impl Rng) -> Self {
        assert!(m > 0, "hash range must be positive");
        UniversalHash { a: rng.random_range(1..P), b: rng.random_range(0..P), m: m as u64 }
    }

    #[inline]
    pub fn hash(&self, x: u32) -> u32 {
        let v = (self.a as u128 * x as u128 + self.b as u128) % P as u128;
        (v as u64 % self.m) as u32
    }

    /// The same family on 64-bit keys (x < 2^64; a x + b fits in u128), for (id, coordinate)
    /// pairs of element-wise methods.
    #[inline]
    pub fn hash64(&self, x: u64) -> u64 {
        let v = (self.a as u128 * x as u128 + self.b as u128) % P as u128;
        v as u64 % self.m
    }

    /// The function as an export index ([`crate::export::Index::Hash`]).
    pub fn index(&self) -> crate::export::Index {
        crate::export::Index::Hash { a: self.a, b: self.b, m: self.m }
    }

    /// Bytes to store the function (a, b, m).
    pub const BYTES: u64 = 24;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn spreads_ids_evenly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let h = UniversalHash::new(100, &mut rng);
        let mut counts = [0usize; 100];
        for x in 0..100_000u32 {
            counts[h.hash(x) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (700..1300).contains(&c)), "{counts:?}");
    }
}
