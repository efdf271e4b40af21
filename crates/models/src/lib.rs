//! DLRM, DCN-v2, DeepFM, Wide & Deep and GMF on burn, with embedding tables from `cqr-methods`, and one training loop.

pub mod bench;
pub mod dcn;
pub mod deepfm;
pub mod embeddings;
pub mod export;
pub mod fused;
pub mod net;
pub mod probe;
pub mod threads;
pub mod train;
pub mod wdl;

pub use dcn::DcnConfig;
pub use deepfm::DeepFmConfig;
pub use embeddings::{EmbeddingSpec, EmbeddingTables, TableRecord};
pub use fused::Precision;
pub use net::DlrmConfig;
pub use train::{
    train, train_model, DailyScores, DayScores, EvalPoint, FrequencyBce, MlpBackend, ModelConfig, NoveltyScores,
    OptimizerKind, RunResult, Scores, ServingCost, Shuffle, TrainConfig, TrainError, TrainedModel, FREQ_BOUNDS,
};
pub use wdl::WdlConfig;
