//! The one place methods are registered by name. Adding a method: one file implementing
//! [`EmbeddingMethod`], one line in `REGISTRY`.

use crate::{EmbeddingMethod, MethodError, MethodParams};

type Builder = fn(&MethodParams) -> Result<Box<dyn EmbeddingMethod>, MethodError>;

fn boxed<M: EmbeddingMethod + 'static>(r: Result<M, MethodError>) -> Result<Box<dyn EmbeddingMethod>, MethodError> {
    r.map(|m| Box::new(m) as Box<dyn EmbeddingMethod>)
}

const REGISTRY: &[(&str, Builder)] = &[
    (crate::dense::Dense::NAME, |p| boxed(crate::dense::Dense::new(p))),
    (crate::hashing::Hashing::NAME, |p| boxed(crate::hashing::Hashing::new(p))),
    (crate::qr::Qr::NAME, |p| boxed(crate::qr::Qr::new(p))),
    (crate::ce::Ce::NAME, |p| boxed(crate::ce::Ce::new(p))),
    (crate::pq::Pq::NAME, |p| boxed(crate::pq::Pq::new(p))),
    (crate::rq::Rq::NAME, |p| boxed(crate::rq::Rq::new(p))),
    (crate::cqr::Cqr::NAME, |p| boxed(crate::cqr::Cqr::new(p))),
    (crate::bloom::Bloom::NAME, |p| boxed(crate::bloom::Bloom::new(p))),
    (crate::hashednets::HashedNets::NAME, |p| boxed(crate::hashednets::HashedNets::new(p))),
    (crate::robe::Robe::NAME, |p| boxed(crate::robe::Robe::new(p))),
    (crate::hash_embedding::HashEmbedding::NAME, |p| boxed(crate::hash_embedding::HashEmbedding::new(p))),
    (crate::lowdim::LowDim::NAME, |p| boxed(crate::lowdim::LowDim::new(p))),
    (crate::ttrec::TtRec::NAME, |p| boxed(crate::ttrec::TtRec::new(p))),
    (crate::dhe::Dhe::NAME, |p| boxed(crate::dhe::Dhe::new(p))),
    (crate::cafe::Cafe::NAME, |p| boxed(crate::cafe::Cafe::new(p))),
    (crate::adaembed::AdaEmbed::NAME, |p| boxed(crate::adaembed::AdaEmbed::new(p))),
    (crate::alpt::Alpt::NAME, |p| boxed(crate::alpt::Alpt::new(p))),
    (crate::mdfreq::MdFreq::NAME, |p| boxed(crate::mdfreq::MdFreq::new(p))),
    (crate::pep::Pep::NAME, |p| boxed(crate::pep::Pep::new(p))),
];

/// Names of every registered method.
pub fn method_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

/// Builds a method by name; unknown names and invalid options are errors here, never later.
pub fn build_method(name: &str, params: &MethodParams) -> Result<Box<dyn EmbeddingMethod>, MethodError> {
    let (_, build) = REGISTRY.iter().find(|(n, _)| *n == name).ok_or_else(|| MethodError::UnknownMethod(name.to_string()))?;
    build(params)
}

/// Whether the method needs each id's training count (`MethodParams::id_counts`) to be built.
pub fn needs_counts(name: &str) -> bool {
    name == crate::mdfreq::MdFreq::NAME
}

/// Whether the method trains a full table and compresses after training (PQ, RQ).
pub fn is_post_training(name: &str) -> bool {
    matches!(name, "pq" | "rq")
}

/// Whether the method's training memory is the full table (PQ and RQ compress after training,
/// PEP prunes a full table): only the served table is within the budget. Reports label them.
pub fn trains_full_table(name: &str) -> bool {
    is_post_training(name) || name == crate::pep::Pep::NAME
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
}
