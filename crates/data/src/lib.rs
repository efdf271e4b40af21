//! Data for cqr-bench: streaming readers for Criteo (Kaggle and Terabyte), Avazu, MovieLens and any
//! table (CSV, TSV, Parquet, libsvm/libfm),
//! DLRM-style preprocessing with vocabularies or modulo hashing, chronological splits, an on-disk
//! cache of binary columns (memory-mapped for data beyond RAM), and planted synthetic generators whose best achievable score is known.

pub mod cache;
pub mod column;
pub mod dataset;
pub mod error;
pub mod inspect;
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
pub use preprocess::{load_tabular, CategoricalEncoding, PreprocessOptions, SplitSpec, TabularSource};
pub use records::TabularFormat;
pub use skip::{BadRowPolicy, SkipReport};
pub use table::{load_table, TableConfig, TableFormat};

/// Where the real samples shipped with (or staged beside) the repository live, for tests.
pub mod samples {
    use std::path::PathBuf;

    fn repo_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
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
