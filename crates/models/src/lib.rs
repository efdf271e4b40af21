//! DLRM and GMF on burn, with embedding tables from `cqr-methods`, and one training loop.

pub mod bench;
pub mod net;
pub mod tables;
pub mod train;

pub use net::DlrmConfig;
pub use tables::{EmbeddingSpec, EmbeddingTables, TableRecord};
pub use train::{train, Backend, EvalPoint, FrequencyBce, FREQ_BOUNDS, ModelConfig, OptimizerKind, RunResult, Scores, Shuffle, TrainConfig, TrainError};
