//! The pieces behind the `cqr` binary: experiment files, sweeps, tables, charts, reports.

pub mod bench;
pub mod cell;
pub mod chart;
pub mod config;
pub mod daily_report;
pub mod export;
pub mod frames;
pub mod jobs;
pub mod paired;
pub mod plot;
pub mod record;
pub mod report;
pub mod runaway;
pub mod serving_report;
pub mod slurm;
pub mod sweep;
pub mod tune;
pub mod tune_report;
pub mod verify;
