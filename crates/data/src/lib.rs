//! Data for cqr-bench: streaming readers for Criteo (Kaggle and Terabyte), Avazu, MovieLens and any
//! table (CSV, TSV, Parquet, libsvm/libfm),
//! DLRM-style preprocessing with vocabularies or modulo hashing, chronological splits, an on-disk
//! cache of binary columns (memory-mapped for data beyond RAM), and planted synthetic generators whose best achievable score is known.

pub mod cache;
pub mod column;
pub mod dataset;
pub mod days;
pub mod error;
pub mod inspect;
pub mod invalid;
pub mod metrics;
pub mod movielens;
pub mod preprocess;
pub mod records;
pub mod skip;
pub mod synthetic;
pub mod table;

pub use cache::{load_cached, CacheOutcome, RowSink, Storage};
pub use column::Column;
pub use dataset::{Dataset, Splits, TeacherScore};
pub use error::{DataError, Result};
pub use invalid::{invalid, Invalid};
pub use preprocess::{load_tabular, CategoricalEncoding, PreprocessOptions, SplitSpec, TabularSource};
pub use records::TabularFormat;
pub use skip::{BadRowPolicy, SkipReport};
pub use table::{load_table, TableConfig, TableFormat};

/// Where the real samples shipped with (or staged beside) the repository live, for tests.
pub mod samples {
    use std::path::PathBuf;

    /// The checkout: two levels above a crate's manifest (every crate sits at `crates/<name>`).
    /// Under cargo (tests, `cargo run`) the run-time `CARGO_MANIFEST_DIR` names the checkout
    /// being tested; the compile-time one is only a fallback, since a target dir shared between
    /// checkouts reuses this crate's build from another clone (seen 2026-12-06: tests here read
    /// a deleted CI clone's path, and a CI clone would read the development tree's files).
    fn repo_root() -> PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
            .join("../..")
    }

    /// The committed Criteo Terabyte sample (CC BY-NC-SA 4.0, see datasets/criteo/).
    pub fn terabyte_sample() -> PathBuf {
        repo_root().join("datasets/criteo/terabyte_day0_sample8k.tsv")
    }

    /// A file under `../shared/datasets` (not redistributable; present on the team's machines).
    /// `None` (and a message on stderr) when absent, so tests skip rather than fail elsewhere.
    pub fn shared(rel: &str) -> Option<PathBuf> {
        let p = repo_root().join("../shared/datasets").join(rel);
        if p.exists() {
            Some(p)
        } else {
            eprintln!("skipping: {} not found (shared datasets are not redistributable)", p.display());
            None
        }
    }
}
