//! The one place methods are registered by name, with the facts the training loop and the
//! reports need about each.
//!
//! **Adding a method**: write `src/mymethod.rs` (a type with `pub const NAME`, `pub fn
//! new(&MethodParams) -> Result<Self, MethodError>` and an [`EmbeddingMethod`] impl), then add
//! one line to the `methods!` list in `lib.rs`, e.g. `mymethod::MyMethod,` or, when a fact
//! holds, `mymethod::MyMethod { post_training },`. That line declares the module, registers
//! the builder under `NAME` and states the facts; nothing else names the method.
//!
//! The facts ([`Facts`]), all false unless listed:
//! - `needs_counts`: built from each id's training count (`MethodParams::id_counts`);
//! - `post_training`: trains a full table and compresses after training, so the training loop
//!   snapshots the best model *before* compression and compresses that one (PQ, RQ);
//! - `trains_full_table`: its training memory is the full table, only the served table is within
//!   the budget (PQ, RQ, PEP); reports label it. Implied by `post_training`.

use crate::{EmbeddingMethod, MethodError, MethodParams};

pub(crate) type Builder = fn(&MethodParams) -> Result<Box<dyn EmbeddingMethod>, MethodError>;

/// What the rest of the harness needs to know about a method (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    pub needs_counts: bool,
    pub post_training: bool,
    pub trains_full_table: bool,
}

impl Facts {
    /// No fact holds (most methods).
    pub const PLAIN: Facts = Facts { needs_counts: false, post_training: false, trains_full_table: false };
}

/// One registered method.
pub struct MethodEntry {
    pub name: &'static str,
    pub facts: Facts,
    pub(crate) build: Builder,
}

/// Declares each method's module and its registry entry (see the module docs).
macro_rules! methods {
    ($($(#[$attr:meta])* $module:ident :: $ty:ident $({ $($fact:ident),+ })?),+ $(,)?) => {
        $($(#[$attr])* mod $module;)+
        pub(crate) const REGISTRY: &[$crate::registry::MethodEntry] = &[$(
            $(#[$attr])* $crate::registry::MethodEntry {
                name: $module::$ty::NAME,
                facts: $crate::registry::Facts { $($($fact: true,)+)? ..$crate::registry::Facts::PLAIN }.completed(),
                build: |p| $module::$ty::new(p).map(|m| Box::new(m) as Box<dyn $crate::EmbeddingMethod>),
            }
        ),+];
    };
}
pub(crate) use methods;

impl Facts {
    /// `post_training` implies `trains_full_table`.
    pub const fn completed(self) -> Facts {
        Facts { trains_full_table: self.trains_full_table || self.post_training, ..self }
    }
}

/// Every registered method, in registry order.
pub fn entries() -> &'static [MethodEntry] {
    crate::REGISTRY
}

/// Names of every registered method.
pub fn method_names() -> Vec<&'static str> {
    entries().iter().map(|e| e.name).collect()
}

/// The registered method of that name.
pub fn entry(name: &str) -> Result<&'static MethodEntry, MethodError> {
    entries().iter().find(|e| e.name == name).ok_or_else(|| MethodError::UnknownMethod(name.to_string()))
}

/// Builds a method by name; unknown names and invalid options are errors here, never later.
pub fn build_method(name: &str, params: &MethodParams) -> Result<Box<dyn EmbeddingMethod>, MethodError> {
    (entry(name)?.build)(params)
}

/// A method's facts; an unknown name has none.
pub fn facts(name: &str) -> Facts {
    entry(name).map(|e| e.facts).unwrap_or_default()
}

/// Whether the method needs each id's training count (`MethodParams::id_counts`) to be built.
pub fn needs_counts(name: &str) -> bool {
    facts(name).needs_counts
}

/// Whether the method trains a full table and compresses after training (PQ, RQ).
pub fn is_post_training(name: &str) -> bool {
    facts(name).post_training
}

/// Whether the method's training memory is the full table (PQ, RQ, PEP).
pub fn trains_full_table(name: &str) -> bool {
    facts(name).trains_full_table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_builds_by_name_and_unknown_names_fail() {
        for name in method_names() {
            let mut p = crate::testing::with_counts(name, MethodParams::new(1000, 16, 16 * 64));
            if needs_counts(name) {
                // One block: 1,000 rows of width 1 and a 1 x 16 projection fit 1,024.
                p.options = serde_json::json!({"blocks": 1});
            }
            let m = build_method(name, &p).unwrap();
            assert_eq!(m.name(), name);
            let mut out = vec![0.0; 3 * 16];
            m.forward(&[0, 999, 500], &mut out);
            assert!(out.iter().all(|v| v.is_finite()));
        }
        let err = build_method("hashnig", &MethodParams::new(10, 4, 40)).err().unwrap().to_string();
        assert!(err.contains("unknown method `hashnig`") && err.contains("cqr"), "{err}");
    }

    #[test]
    fn facts_are_the_registered_ones() {
        let with =
            |f: fn(&Facts) -> bool| -> Vec<&str> { entries().iter().filter(|e| f(&e.facts)).map(|e| e.name).collect() };
        assert_eq!(with(|f| f.post_training), ["pq", "rq"]);
        assert_eq!(with(|f| f.trains_full_table), ["pq", "rq", "pep", "magprune"]);
        assert_eq!(with(|f| f.needs_counts), ["mdfreq"]);
        assert_eq!(facts("no-such-method"), Facts::PLAIN);
        let names = method_names();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "two entries share a name");
    }
}
