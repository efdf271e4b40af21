//! A method's served table as plain arrays plus a lookup program another language can run
//! (`cqr export`; `tools/load_export.py` reads it with numpy).
//!
//! The program: an id's vector is the concatenation of `parts`; a part (`width` values) is the
//! terms' rows combined element-wise by `combine` (sum or product); a term is row `index(id)` of
//! one array (shape `[rows, width]`). Indices: `identity` (the id), `hash` (`((a id + b) mod p)
//! mod m`, p = 2^61 − 1), `quotient`/`remainder` (`id / m`, `id % m`), `pointer` (column `column`
//! of a `[vocab, columns]` integer array). Methods without an `export` (ROBE-style arrays, MLPs
//! per id, tensor trains, quantized rows) are refused by name, never approximated.

use serde::Serialize;

/// How a term finds its row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Index {
    Identity,
    Hash { a: u64, b: u64, m: u64 },
    Quotient { m: u64 },
    Remainder { m: u64 },
    Pointer { array: String, column: usize },
}

/// One row read: `array[index(id)]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Term {
    pub array: String,
    pub index: Index,
}

/// How a part combines its terms, element-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    Sum,
    Product,
}

/// `width` consecutive values of the vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub width: usize,
    pub combine: Combine,
    pub terms: Vec<Term>,
}

/// An exported array (row-major).
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    U32 { shape: Vec<usize>, data: Vec<u32> },
}

/// A method's served table: its arrays (names local to the table) and its lookup program.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub arrays: Vec<(String, Array)>,
    pub parts: Vec<Part>,
}

impl Export {
    /// Runs the program for one id (what the Python reader does; the tests compare it with
    /// `forward`).
    pub fn lookup(&self, id: u32, out: &mut [f32]) {
        let mut at = 0;
        for p in &self.parts {
            let o = &mut out[at..at + p.width];
            for (k, t) in p.terms.iter().enumerate() {
                let row = self.row(t, id);
                let r = &self.f32(&t.array)[row * p.width..(row + 1) * p.width];
                match (k, p.combine) {
                    (0, _) => o.copy_from_slice(r),
                    (_, Combine::Sum) => o.iter_mut().zip(r).for_each(|(o, r)| *o += r),
                    (_, Combine::Product) => o.iter_mut().zip(r).for_each(|(o, r)| *o *= r),
                }
            }
            at += p.width;
        }
    }

    fn row(&self, t: &Term, id: u32) -> usize {
        const P: u128 = (1 << 61) - 1;
        match &t.index {
            Index::Identity => id as usize,
            Index::Hash { a, b, m } => (((*a as u128 * id as u128 + *b as u128) % P) as u64 % m) as usize,
            Index::Quotient { m } => (id as u64 / m) as usize,
            Index::Remainder { m } => (id as u64 % m) as usize,
            Index::Pointer { array, column } => match self.array(array) {
                Array::U32 { shape, data } => data[id as usize * shape[1] + column] as usize,
                Array::F32 { .. } => panic!("pointer array {array} is not integer"),
            },
        }
    }

    fn array(&self, name: &str) -> &Array {
        &self.arrays.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no array {name}")).1
    }

    fn f32(&self, name: &str) -> &[f32] {
        match self.array(name) {
            Array::F32 { data, .. } => data,
            Array::U32 { .. } => panic!("array {name} is not float"),
        }
    }
}

/// `[rows, dim]` floats.
pub fn table(rows: usize, dim: usize, data: &[f32]) -> Array {
    Array::F32 { shape: vec![rows, dim], data: data.to_vec() }
}

/// `[rows, columns]` row indices from a packed index array (row-major, as the methods store them).
pub(crate) fn pointers(rows: usize, columns: usize, index: &crate::index::PackedIndex) -> Array {
    Array::U32 { shape: vec![rows, columns], data: (0..rows * columns).map(|i| index.get(i)).collect() }
}

/// One term reading `array` at `index`.
pub fn term(array: &str, index: Index) -> Term {
    Term { array: array.into(), index }
}

/// A part of one or more terms summed.
pub fn sum(width: usize, terms: Vec<Term>) -> Part {
    Part { width, combine: Combine::Sum, terms }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::{build_method, EmbeddingMethod, MethodParams};
    use serde_json::json;

    /// The exported program gives `forward`'s values bit for bit on every id.
    pub fn check_export(m: &dyn EmbeddingMethod) {
        let e = m.export().unwrap_or_else(|| panic!("{}: no export", m.name()));
        let (v, d) = (m.vocab(), m.dim());
        let ids: Vec<u32> = (0..v as u32).collect();
        let mut want = vec![0.0; v * d];
        m.forward(&ids, &mut want);
        let mut got = vec![0.0; d];
        for &id in &ids {
            e.lookup(id, &mut got);
            assert_eq!(got, want[id as usize * d..(id as usize + 1) * d], "{}: id {id}", m.name());
        }
    }

    /// Every exportable method after a few updates (PQ/RQ compressed, CQR clustered).
    #[test]
    fn programs_match_forward() {
        let cases = [
            ("dense", json!(null)),
            ("hashing", json!(null)),
            ("ce", json!({"n_chunks": 4})),
            ("qr", json!({"combiner": "mult"})),
            ("qr", json!({"combiner": "add"})),
            ("qr", json!({"combiner": "concat"})),
            ("pq", json!({"n_chunks": 4})),
            ("rq", json!({"n_stages": 2})),
            ("cqr", json!({"n_chunks": 4})),
            ("bloom", json!({"k": 3})),
        ];
        for (name, options) in cases {
            let p = MethodParams::new(300, 8, 8 * 40).with_options(options).with_epochs(3);
            let mut m = build_method(name, &p).unwrap();
            let ids: Vec<u32> = (0..300).map(|i| (i * 7 % 300) as u32).collect();
            let grad: Vec<f32> = (0..300 * 8).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
            m.backward(&ids, &grad);
            m.on_epoch_end(0).unwrap();
            m.on_train_end().unwrap();
            check_export(m.as_ref());
            let e = m.export().unwrap();
            if name == "pq" || name == "rq" {
                assert!(e.arrays.iter().any(|(n, _)| n == "codes"), "{name}: exported before compression");
            }
        }
    }

    #[test]
    fn methods_without_a_program_say_so() {
        let m = build_method("robe", &MethodParams::new(300, 8, 8 * 40)).unwrap();
        assert!(m.export().is_none());
    }
}
