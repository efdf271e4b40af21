//! DLRM, DCN-v2, DeepFM, Wide & Deep and GMF on burn, with embedding tables from `cqr-methods`, and one training loop.

pub mod bench;
pub mod dcn;
pub mod deepfm;
pub mod fused;
pub mod net;
pub mod probe;
pub mod embeddings;
pub mod train;
pub mod wdl;

pub use dcn::DcnConfig;
pub use fused::Precision;
pub use deepfm::DeepFmConfig;
pub use net::DlrmConfig;
pub use wdl::WdlConfig;
pub use embeddings::{EmbeddingSpec, EmbeddingTables, TableRecord};
pub use train::{train, EvalPoint, MlpBackend, FrequencyBce, FREQ_BOUNDS, ModelConfig, OptimizerKind, RunResult, Scores, ServingCost, Shuffle, TrainConfig, TrainError};
