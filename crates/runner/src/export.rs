//! `cqr export RESULTS/cells/ID DIR`: the model a cell reports, as served, for other tools.
//!
//! The results directory stores scores, not weights, so the cell is trained again from its
//! stored config (same seed, same data: the same numbers on the CPU model that trained it, as
//! `cqr sweep --verify` checks), keeping the best evaluation's model, and that model is written
//! by [`cqr_models::export::write_export`]. The manifest holds the re-trained run's test BCE
//! and AUC (what the exported model scores) beside the stored ones.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use cqr_data::Dataset;
use cqr_models::{EmbeddingSpec, EmbeddingTables, ModelConfig, TrainConfig};

use crate::cell::{load_dataset, storage_for, train_inputs};
use crate::config::{Cell, DatasetConfig};
use crate::record::{CellOutput, CellRecord};

/// Refuses, before training, what the export cannot write: other backbones, bf16 MLPs,
/// quantized rows, methods without an export program (checked on the untrained tables).
fn precheck(cell: &Cell, ds: &Dataset, model: &ModelConfig, spec: &EmbeddingSpec, tc: &TrainConfig) -> Result<()> {
    if !matches!(model, ModelConfig::Dlrm(_) | ModelConfig::Gmf { .. }) {
        bail!("cell {}: only dlrm and gmf backbones are exported", cell.name);
    }
    if !tc.precision.is_f32() {
        bail!("cell {}: bf16 MLPs are not exported (their products round inside)", cell.name);
    }
    if spec.quantize.is_some() {
        bail!("cell {}: quantized rows have no export program yet", cell.name);
    }
    let (dim, opt) = (model.dim(), tc.row_optimizer());
    // Methods built from training counts (mdfreq) fail here without them; training reports those.
    if let Ok(t) = EmbeddingTables::new(spec, &ds.cat_names, &ds.cardinalities, dim, opt, tc.epochs, (1, None), 0, &[])
    {
        if let Some((i, m)) = t.methods.iter().enumerate().find(|(_, m)| m.export().is_none()) {
            bail!(
                "cell {}: table {i} ({}): method `{}` has no export program yet",
                cell.name,
                ds.cat_names[i],
                m.name()
            );
        }
    }
    Ok(())
}

/// Re-trains the cell stored in `cell_dir` and writes its served model to `out`; returns a
/// summary for the terminal.
pub fn export_cell(cell_dir: &Path, out: &Path, cache: &Path) -> Result<String> {
    let path = cell_dir.join("record.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{}: no cell record (give a directory results/<experiment>/cells/<id>)", path.display())
    })?;
    let rec: CellRecord =
        serde_json::from_str(&text).with_context(|| format!("{}: not a cell record", path.display()))?;
    let CellOutput::Train(stored) = &rec.output else {
        bail!("{}: cell {} has no trained model to export", path.display(), rec.name);
    };
    if matches!(rec.config.dataset, DatasetConfig::LeastSquares(_)) {
        bail!("cell {}: least-squares cells have no model", rec.name);
    }
    let cell = Cell { id: rec.id.clone(), name: rec.name.clone(), config: rec.config.clone() };
    let ds = load_dataset(&cell.config.dataset, cache, storage_for(&cell.config.training))?;
    let (model, spec, mut tc) = train_inputs(&cell, &ds, false)?;
    precheck(&cell, &ds, &model, &spec, &tc)?;
    tc.keep_best_model = true;
    let (run, trained) = cqr_models::train_model(&ds, &model, &spec, &tc)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("re-training cell {}", cell.name))?;
    let (new, old) = (&run.reported, &stored.reported);
    let extra = json!({
        "cell": { "id": rec.id, "name": rec.name, "dataset": rec.dataset, "config": rec.config },
        "expected": { "test_bce": new.test_bce, "test_auc": new.test_auc, "rows": ds.splits.test.len() },
        "stored": { "test_bce": old.test_bce, "test_auc": old.test_auc, "cpu": rec.cpu },
        "cpu": crate::bench::cpu_model(),
    });
    let files = cqr_models::export::write_export(&trained, &ds, out, extra)?;
    let same = if new.test_bce == old.test_bce {
        "identical to the stored record".to_string()
    } else {
        format!("stored {:.9} (relative difference {:.1e})", old.test_bce, (new.test_bce / old.test_bce - 1.0).abs())
    };
    Ok(format!(
        "{}: test BCE {:.9} ({same}), AUC {:.6}\nwrote {} (model {} bytes, test split {} bytes)\ncheck: python3 tools/load_export.py {}\n",
        cell.name,
        new.test_bce,
        new.test_auc,
        files.manifest.display(),
        files.model_bytes,
        files.test_bytes,
        out.display()
    ))
}
