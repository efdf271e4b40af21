//! Running one cell: its dataset (cached), its training or least-squares run, its record.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};

use cqr_data::movielens::load_movielens;
use cqr_data::preprocess::file_identity;
use cqr_data::preprocess::load_tabular_into;
use cqr_data::synthetic::{generate_criteo, generate_gmf};
use cqr_data::{load_cached, load_table, CacheOutcome, Dataset, Storage, TabularFormat, TabularSource};
use cqr_models::{train, EmbeddingSpec, ModelConfig, TrainConfig};

use crate::config::{Cell, DatasetConfig};
use crate::record::{CellOutput, CellRecord};

/// What a training cell passes to [`train`]: its backbone sized for `ds`, its embedding spec and
/// its training config with the cell's seed.
pub fn train_inputs(cell: &Cell, ds: &Dataset, progress: bool) -> Result<(ModelConfig, EmbeddingSpec, TrainConfig)> {
    let c = &cell.config;
    let model =
        c.model.as_ref().ok_or_else(|| anyhow!("cell {} has no model", cell.name))?.resolve_for(ds.n_dense())?;
    let method = c.method.as_ref().ok_or_else(|| anyhow!("cell {} has no method", cell.name))?;
    let spec = EmbeddingSpec {
        method: method.name.clone(),
        budget: c.budget.unwrap_or(u64::MAX),
        options: method.options.clone(),
        init_scale: method.init_scale,
        quantize: method.quantize,
        dense_under_cap: method.dense_under_cap,
    };
    Ok((model, spec, TrainConfig { seed: c.seed, progress, ..c.training.clone() }))
}

/// Loads (or generates) the dataset of a cell through the on-disk cache, held as `storage` says.
pub fn load_dataset(cfg: &DatasetConfig, cache: &Path, storage: Storage) -> Result<Dataset> {
    Ok(load_dataset_counted(cfg, cache, storage)?.0)
}

/// [`load_dataset`], also saying whether the cache served it or it was built now.
pub fn load_dataset_counted(cfg: &DatasetConfig, cache: &Path, storage: Storage) -> Result<(Dataset, CacheOutcome)> {
    let key = |extra: Vec<String>| -> Vec<String> {
        let mut k = vec![serde_json::to_string(cfg).expect("config serialises")];
        k.extend(extra);
        k
    };
    let ids = |paths: &[&PathBuf]| paths.iter().map(|p| file_identity(p)).collect::<Result<Vec<_>, _>>();
    Ok(match cfg {
        DatasetConfig::SyntheticCriteo(c) => {
            load_cached(Some(cache), &key(vec![]), storage, |s| s.absorb(generate_criteo(c)?))?
        }
        DatasetConfig::SyntheticGmf(c) => {
            load_cached(Some(cache), &key(vec![]), storage, |s| s.absorb(generate_gmf(c)?))?
        }
        DatasetConfig::Criteo(f) | DatasetConfig::Avazu(f) => {
            let format =
                if matches!(cfg, DatasetConfig::Criteo(_)) { TabularFormat::Criteo } else { TabularFormat::Avazu };
            let train = f.path.to_vec();
            let all: Vec<&PathBuf> = train.iter().chain(f.test_path.as_ref()).collect();
            let src = TabularSource { format, train: train.clone(), test: f.test_path.clone() };
            load_cached(Some(cache), &key(ids(&all)?), storage, |s| load_tabular_into(&src, &f.preprocess, s))?
        }
        DatasetConfig::Movielens(m) => load_cached(Some(cache), &key(ids(&[&m.path])?), storage, |s| {
            s.absorb(load_movielens(&m.path, m.layout, m.bad_rows)?.0)
        })?,
        DatasetConfig::Table(t) => {
            let all: Vec<&PathBuf> =
                [Some(&t.path), t.val_path.as_ref(), t.test_path.as_ref()].into_iter().flatten().collect();
            load_cached(Some(cache), &key(ids(&all)?), storage, |s| load_table(t, s))?
        }
        DatasetConfig::LeastSquares(_) => return Err(anyhow!("least squares cells have no dataset")),
    })
}

/// Out-of-core training (`shuffle: blocks`) memory-maps the cached arrays; otherwise they are read
/// into memory. Results do not depend on it: the row order is the shuffle's, not the storage's.
pub fn storage_for(training: &TrainConfig) -> Storage {
    if training.shuffle.is_full() {
        Storage::Memory
    } else {
        Storage::Mapped
    }
}

/// The day-by-day protocol (`training.days`) reads a dataset's rows in time order as equal days:
/// its splits become the days' (train day 0, validation and test the later days). Planted
/// data that moves by day already has them; on other data the teacher's score (if any) was
/// taken on other splits and is dropped.
fn day_splits(ds: &mut Dataset, days: usize) -> Result<()> {
    let want = cqr_data::days::daily_splits(ds.n_rows(), days)?;
    if ds.splits != want {
        ds.splits = want;
        ds.teacher = None;
    }
    Ok(())
}

/// Runs one cell (no I/O of results).
pub fn run_cell(cell: &Cell, cache: &Path, progress: bool) -> Result<CellRecord> {
    Ok(run_cell_counted(cell, cache, progress)?.0)
}

/// [`run_cell`], also saying whether its dataset was built for it (`Miss`) or came from the cache.
pub fn run_cell_counted(cell: &Cell, cache: &Path, progress: bool) -> Result<(CellRecord, CacheOutcome)> {
    let t0 = Instant::now();
    let c = &cell.config;
    let mut outcome = CacheOutcome::Disabled;
    let (dataset, output) = match &c.dataset {
        DatasetConfig::LeastSquares(ls) => {
            let cfg = cqr_methods::least_squares::LeastSquaresConfig { seed: c.seed, ..*ls };
            ("least-squares".to_string(), CellOutput::LeastSquares(cfg.run()?))
        }
        other => {
            let (mut ds, o) = load_dataset_counted(other, cache, storage_for(&c.training))?;
            outcome = o;
            if let Some(days) = c.training.days {
                day_splits(&mut ds, days)?;
            }
            // Label: the file name, plus the test file's when there is one (two cells on the same
            // train file but different test files must not be averaged together).
            let label = match other {
                DatasetConfig::Criteo(f) | DatasetConfig::Avazu(f) => match &f.test_path {
                    Some(t) => format!(
                        "{}+test:{}",
                        ds.name,
                        t.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
                    ),
                    None => ds.name.clone(),
                },
                _ => ds.name.clone(),
            };
            let (model, spec, tc) = train_inputs(cell, &ds, progress)?;
            match train(&ds, &model, &spec, &tc) {
                Ok(r) => (label, CellOutput::Train(Box::new(r))),
                Err(cqr_models::TrainError::Method(e @ cqr_methods::MethodError::Budget { .. })) => {
                    (label, CellOutput::Infeasible { reason: e.to_string() })
                }
                // A tuning trial whose learning rate is too high is a result (the worst), not a
                // failure of the search.
                Err(e @ cqr_models::TrainError::NonFinite { .. }) if c.tuning.is_some() => {
                    (label, CellOutput::Diverged { reason: e.to_string() })
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cell {}", cell.name))),
            }
        }
    };
    Ok((
        CellRecord {
            id: cell.id.clone(),
            name: cell.name.clone(),
            dataset,
            config: c.clone(),
            output,
            wall_s: t0.elapsed().as_secs_f64(),
            cpu: Some(crate::bench::cpu_model()),
            kernels: Some(cqr_models::fused::kernels().to_string()),
        },
        outcome,
    ))
}
