//! Experiment files: YAML sections, grids (any scalar may be a list), per-method overrides, and
//! errors that name the file, the key path and the line.
//!
//! One job a file: [`lines`] finds where each key was written, [`grid`] expands the grid into
//! cells, and this module holds the typed sections and checks each resolved cell once
//! ([`to_config`]), before anything runs.

mod grid;
mod lines;
pub mod name;
pub mod tune;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

pub use grid::{cell_id, parse_experiment};
pub use lines::line_index;
use lines::{file_path_for, Ctx};
pub use name::CellName;

use cqr_data::movielens::MovieLensLayout;
use cqr_data::synthetic::{CriteoSynthConfig, GmfSynthConfig};
use cqr_data::{BadRowPolicy, PreprocessOptions, TableConfig};
use cqr_methods::least_squares::LeastSquaresConfig;
use cqr_models::{DcnConfig, DeepFmConfig, DlrmConfig, ModelConfig, TrainConfig, WdlConfig};

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DatasetConfig {
    SyntheticCriteo(CriteoSynthConfig),
    SyntheticGmf(GmfSynthConfig),
    Criteo(TabularFileConfig),
    Avazu(TabularFileConfig),
    Movielens(MovieLensConfig),
    LeastSquares(LeastSquaresConfig),
    /// Any CSV/TSV/Parquet/libsvm/libfm table (see `cqr_data::table`).
    Table(TableConfig),
}

impl DatasetConfig {
    /// What can be checked before any cell runs: every input file readable, and (tables) the
    /// named columns present in the header. [`crate::sweep::sweep`] calls it once per dataset.
    pub fn precheck(&self) -> Result<()> {
        let readable =
            |p: &Path| std::fs::File::open(p).map(drop).map_err(|e| anyhow!("{}: cannot read file: {e}", p.display()));
        match self {
            DatasetConfig::Criteo(f) | DatasetConfig::Avazu(f) => {
                f.path.to_vec().iter().chain(f.test_path.as_ref()).try_for_each(|p| readable(p))
            }
            DatasetConfig::Movielens(m) => readable(&m.path),
            DatasetConfig::Table(t) => t.precheck().map_err(anyhow::Error::from),
            DatasetConfig::SyntheticCriteo(_) | DatasetConfig::SyntheticGmf(_) | DatasetConfig::LeastSquares(_) => {
                Ok(())
            }
        }
    }

    /// The split fractions of a file dataset without a separate test file (checked at parse time).
    fn split_check(&self) -> Result<()> {
        let split = match self {
            DatasetConfig::Criteo(f) | DatasetConfig::Avazu(f) if f.test_path.is_none() => &f.preprocess.split,
            DatasetConfig::Table(t) if t.test_path.is_none() => &t.preprocess.split,
            _ => return Ok(()),
        };
        split.validate().map_err(anyhow::Error::from)
    }
}

/// One path, or a list read in order (Criteo Terabyte: the training day files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathList {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl PathList {
    pub fn to_vec(&self) -> Vec<PathBuf> {
        match self {
            PathList::One(p) => vec![p.clone()],
            PathList::Many(v) => v.clone(),
        }
    }
    /// The first file (it names the dataset).
    pub fn first(&self) -> Option<&PathBuf> {
        match self {
            PathList::One(p) => Some(p),
            PathList::Many(v) => v.first(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabularFileConfig {
    pub path: PathList,
    /// A separate test file (e.g. a later day); the train file then gives train + validation.
    #[serde(default)]
    pub test_path: Option<PathBuf>,
    #[serde(default)]
    pub preprocess: PreprocessOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovieLensConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub layout: Option<MovieLensLayout>,
    #[serde(default)]
    pub bad_rows: BadRowPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Dlrm,
    Gmf,
    Dcn,
    Deepfm,
    Wdl,
}

/// `model:` section: a kind, an optional preset, and overrides of its sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub kind: ModelKind,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub dim: Option<usize>,
    #[serde(default)]
    pub bottom: Option<Vec<usize>>,
    #[serde(default)]
    pub top: Option<Vec<usize>>,
    /// DCN-v2, DeepFM, Wide & Deep: the deep network's hidden sizes. Not serialised when unset
    /// (nor `cross_layers`), so the ids of earlier cells stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep: Option<Vec<usize>>,
    /// DCN-v2: the number of cross layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_layers: Option<usize>,
}

impl ModelSpec {
    /// The model as written, before the data is known (a preset's bottom MLP starts with its
    /// own numeric width, 13); used to check the file at parse time.
    pub fn resolve(&self) -> Result<ModelConfig> {
        self.resolve_with(None)
    }

    /// The model for a dataset with `n_dense` numeric columns. A preset names sizes, not the
    /// data: unless `bottom` is given explicitly, the bottom MLP's input width is the dataset's
    /// numeric column count. An explicit `bottom` is taken as written and checked against the
    /// data when the model is built.
    pub fn resolve_for(&self, n_dense: usize) -> Result<ModelConfig> {
        self.resolve_with(Some(n_dense))
    }

    fn resolve_with(&self, n_dense: Option<usize>) -> Result<ModelConfig> {
        self.check_keys()?;
        let preset = self.preset.as_deref().unwrap_or("small");
        let unknown =
            |known: &str| anyhow!("model.preset: unknown preset `{preset}` for {:?} (known: {known})", self.kind);
        let dim = |d: usize| self.dim.unwrap_or(d);
        let deep = |d: Vec<usize>| self.deep.clone().unwrap_or(d);
        Ok(match self.kind {
            ModelKind::Gmf => ModelConfig::Gmf { dim: self.dim.unwrap_or(32) },
            ModelKind::Dlrm => ModelConfig::Dlrm(self.dlrm(preset, n_dense)?),
            ModelKind::Dcn => {
                let c = DcnConfig::preset(preset).ok_or_else(|| unknown("kaggle = criteo, small"))?;
                ModelConfig::Dcn(DcnConfig {
                    dim: dim(c.dim),
                    cross_layers: self.cross_layers.unwrap_or(c.cross_layers),
                    deep: deep(c.deep),
                })
            }
            ModelKind::Deepfm => {
                let c = cqr_models::deepfm::preset(preset).ok_or_else(|| unknown("kaggle = criteo, small"))?;
                ModelConfig::Deepfm(DeepFmConfig { dim: dim(c.dim), deep: deep(c.deep) })
            }
            ModelKind::Wdl => {
                let c = cqr_models::wdl::preset(preset).ok_or_else(|| unknown("kaggle = criteo, small"))?;
                ModelConfig::Wdl(WdlConfig { dim: dim(c.dim), deep: deep(c.deep) })
            }
        })
    }

    /// Size keys belong to some kinds only: `bottom`/`top` to DLRM, `deep` to DCN-v2, DeepFM and
    /// Wide & Deep, `cross_layers` to DCN-v2.
    fn check_keys(&self) -> Result<()> {
        let dlrm = self.kind == ModelKind::Dlrm;
        let deep_kinds = matches!(self.kind, ModelKind::Dcn | ModelKind::Deepfm | ModelKind::Wdl);
        let misplaced = [
            ("bottom", self.bottom.is_some() && !dlrm),
            ("top", self.top.is_some() && !dlrm),
            ("deep", self.deep.is_some() && !deep_kinds),
            ("cross_layers", self.cross_layers.is_some() && self.kind != ModelKind::Dcn),
        ];
        match misplaced.iter().find(|(_, bad)| *bad) {
            Some((key, _)) => Err(anyhow!("model.{key}: not a size of model kind {:?}", self.kind)),
            None => Ok(()),
        }
    }

    fn dlrm(&self, preset: &str, n_dense: Option<usize>) -> Result<DlrmConfig> {
        let mut c = DlrmConfig::preset(preset)
            .ok_or_else(|| anyhow!("model.preset: unknown preset `{preset}` (known: kaggle, small)"))?;
        if let Some(d) = self.dim {
            c.dim = d;
            if let Some(last) = c.bottom.last_mut() {
                *last = d;
            }
        }
        match (&self.bottom, n_dense) {
            (Some(b), _) => c.bottom = b.clone(),
            (None, Some(n)) if n > 0 => c.bottom[0] = n,
            _ => {}
        }
        if let Some(t) = &self.top {
            c.top = t.clone();
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    pub name: String,
    #[serde(default)]
    pub options: serde_json::Value,
    #[serde(default = "default_init_scale")]
    pub init_scale: f32,
    /// `int8` or `int4`: quantize the final tables row-wise after training (any method; see
    /// `cqr_methods::quantize`). Not serialised when unset, so earlier cell ids stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<cqr_methods::Quantize>,
    /// `false`: tables under the cap get the method too (see `cqr_models::EmbeddingSpec`). Not
    /// serialised when true, so earlier cell ids stay the same.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub dense_under_cap: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

fn default_init_scale() -> f32 {
    0.05
}

/// One fully resolved run. Its JSON (keys sorted) hashes to the cell id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellConfig {
    pub experiment: String,
    pub dataset: DatasetConfig,
    #[serde(default)]
    pub model: Option<ModelSpec>,
    #[serde(default)]
    pub training: TrainConfig,
    #[serde(default)]
    pub method: Option<MethodSpec>,
    /// Per-table parameter cap.
    #[serde(default)]
    pub budget: Option<u64>,
    pub seed: u64,
    /// Set on the cells of a tuning search (never on the final runs of a pick), so that their
    /// records stay out of the summary tables. Not serialised when unset: cell ids unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TrialTag>,
}

/// A tuning cell's trial (its index in the group; the setting is in the config itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialTag {
    pub trial: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Hash of the resolved config: stable across runs and machines.
    pub id: String,
    /// Readable: method, budget, seed and the values of other grid axes.
    pub name: String,
    pub config: CellConfig,
}

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub file: PathBuf,
    /// The cells to run (empty for a tuned experiment, whose cells are in `tune`).
    pub cells: Vec<Cell>,
    /// A `tune:` section's search: run by [`crate::tune::run`].
    pub tune: Option<TunePlan>,
}

impl Experiment {
    /// Every cell the experiment may run: its cells, or every tuning cell and every trial's
    /// final cells (only the picks' run).
    pub fn every_cell(&self) -> Vec<&Cell> {
        match &self.tune {
            None => self.cells.iter().collect(),
            Some(p) => p
                .groups
                .iter()
                .flat_map(|g| g.trials.iter())
                .flat_map(|t| t.rungs.iter().flatten().chain(&t.full).chain(&t.finals))
                .collect(),
        }
    }
}

/// The search of a `tune:` section: one group per method entry × grid point × budget.
#[derive(Debug, Clone)]
pub struct TunePlan {
    pub spec: tune::TuneSpec,
    /// Trials in every group (the same for all: an equal trial budget).
    pub trials_per_group: usize,
    pub groups: Vec<TuneGroup>,
}

#[derive(Debug, Clone)]
pub struct TuneGroup {
    /// The final cells' variant (method, budget and labels, no tuned values): what the tables
    /// and the paired comparisons call this line.
    pub line: String,
    pub method: String,
    pub budget: Option<u64>,
    pub trials: Vec<TunedTrial>,
}

#[derive(Debug, Clone)]
pub struct TunedTrial {
    pub setting: tune::Setting,
    /// Halving: per rung, the partial runs on the tuning seeds.
    pub rungs: Vec<Vec<Cell>>,
    /// The full runs on the tuning seeds.
    pub full: Vec<Cell>,
    /// The runs on the experiment's seeds, made if this trial is picked.
    pub finals: Vec<Cell>,
}

pub fn load_experiment(file: &Path) -> Result<Experiment> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("{}: cannot read experiment file", file.display()))?;
    parse_experiment(&text, file)
}

/// The key path of a deserialisation error; for an unknown key, the key itself rather than its
/// parent.
fn error_path<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    let msg = e.inner().to_string();
    match msg.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
        Some(key) if path == "." || path.is_empty() => key.to_string(),
        Some(key) => format!("{path}.{key}"),
        None => path,
    }
}

/// The path and message of an error inside a dataset section, found by deserialising it into
/// the struct its `kind` names.
fn dataset_error(v: &Value) -> Option<(String, String)> {
    let mut m = v.as_mapping()?.clone();
    let kind = m.remove("kind")?;
    let body = Value::Mapping(m);
    fn check<T: serde::de::DeserializeOwned>(v: Value) -> Option<(String, String)> {
        serde_path_to_error::deserialize::<_, T>(v).err().map(|e| (error_path(&e), e.inner().to_string()))
    }
    match kind.as_str()? {
        "synthetic_criteo" => check::<CriteoSynthConfig>(body),
        "synthetic_gmf" => check::<GmfSynthConfig>(body),
        "criteo" | "avazu" => check::<TabularFileConfig>(body),
        "movielens" => check::<MovieLensConfig>(body),
        "least_squares" => check::<LeastSquaresConfig>(body),
        _ => None,
    }
}

pub(crate) fn to_config(v: &Value, method_index: Option<usize>, ctx: &Ctx) -> Result<CellConfig> {
    let de = v.clone();
    let cfg: CellConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        // serde buffers internally tagged enums (the dataset), which hides the path inside them:
        // deserialise the dataset section on its own to recover it.
        if e.path().to_string() == "dataset" {
            if let Some((inner, msg)) = v.get("dataset").and_then(dataset_error) {
                let path = format!("dataset.{inner}");
                return ctx.err(&path, msg);
            }
        }
        let path = error_path(&e);
        ctx.err(&file_path_for(&path, method_index, &ctx.index), e.into_inner())
    })?;
    if let Err(e) = cfg.dataset.split_check() {
        return Err(ctx.err("dataset.preprocess.split", e));
    }
    if !matches!(cfg.dataset, DatasetConfig::LeastSquares(_)) {
        let Some(spec) = cfg.model.as_ref() else { return Err(ctx.err("model", "missing section")) };
        let model = spec.resolve().map_err(|e| ctx.err("model", e))?;
        if let (Some(m), Some(i)) = (&cfg.method, method_index) {
            // Build the method on a stand-in table to check its options now, not hours later.
            // Budget problems depend on the real vocabularies and surface when the cell runs.
            let dim = model.dim();
            // The training schedule is the cell's (steps per epoch: a stand-in, the data decides).
            let mut p = cqr_methods::MethodParams::new(4096, dim, 1024 * dim as u64)
                .with_epochs(cfg.training.epochs)
                .with_steps(1000, cfg.training.eval_interval(1000))
                .with_options(m.options.clone());
            if cqr_methods::registry::needs_counts(&m.name) {
                p.id_counts = Some(vec![1u32; 4096].into());
            }
            if let Err(e @ (cqr_methods::MethodError::BadOptions { .. } | cqr_methods::MethodError::UnknownMethod(_))) =
                cqr_methods::build_method(&m.name, &p)
            {
                return Err(ctx.err(&format!("methods[{i}].options"), e));
            }
        }
        if let Err(e) = cfg.training.validate() {
            return Err(ctx.err("training", e));
        }
        if let Err(e) = model.check_precision(cfg.training.precision) {
            return Err(ctx.err("training.precision", e.reason));
        }
        if let (
            ModelConfig::Gmf { .. },
            DatasetConfig::SyntheticCriteo(_) | DatasetConfig::Criteo(_) | DatasetConfig::Avazu(_),
        ) = (&model, &cfg.dataset)
        {
            return Err(
                ctx.err("model.kind", "gmf needs a two-column (user, item) dataset: movielens or synthetic_gmf")
            );
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: t
dataset:
  kind: synthetic_gmf
  rows: 1000
  users: 50
  items: 50
model:
  kind: gmf
  dim: 8
training:
  lr: [0.01, 0.001]
  epochs: 2
methods:
  - name: hashing
  - name: cqr
    options:
      n_chunks: [2, 4]
    overrides:
      training:
        epochs: 3
budgets: [80, 160]
seeds: [0, 1]
"#;

    fn parse(text: &str) -> Result<Experiment> {
        parse_experiment(text, Path::new("exp.yaml"))
    }

    #[test]
    fn grid_expansion_and_overrides() {
        let e = parse(GOOD).unwrap();
        // hashing: 2 lr x 2 budgets x 2 seeds = 8; cqr: 2 lr x 2 chunks x 2 x 2 = 16.
        assert_eq!(e.cells.len(), 24);
        let cqr: Vec<&Cell> = e.cells.iter().filter(|c| c.config.method.as_ref().unwrap().name == "cqr").collect();
        assert!(cqr.iter().all(|c| c.config.training.epochs == 3));
        assert!(e.cells.iter().filter(|c| c.config.method.as_ref().unwrap().name == "hashing").all(|c| c
            .config
            .training
            .epochs
            == 2));
        assert!(
            cqr.iter().any(|c| c.name == "cqr-b160-lr=0.001-n_chunks=4-s1"),
            "{:?}",
            cqr.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cell_ids_are_stable_and_distinct() {
        let a = parse(GOOD).unwrap();
        let b = parse(GOOD).unwrap();
        assert_eq!(
            a.cells.iter().map(|c| &c.id).collect::<Vec<_>>(),
            b.cells.iter().map(|c| &c.id).collect::<Vec<_>>()
        );
        let ids: std::collections::HashSet<_> = a.cells.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids.len(), a.cells.len());
        // Pinned: a change of id would orphan every stored result.
        let first = &a.cells[0];
        assert_eq!(first.id, cell_id(&first.config));
        assert_eq!(first.id.len(), 16);
    }

    #[test]
    fn precision_is_a_grid_axis_and_f32_keeps_the_ids() {
        let e = err(&GOOD.replace("  epochs: 2\n", "  epochs: 2\n  precision: bf16\n"));
        assert!(e.contains("training.precision") && e.contains("gmf has no MLP"), "{e}");
        let dlrm = GOOD
            .replace(
                "kind: synthetic_gmf\n  rows: 1000\n  users: 50\n  items: 50",
                "kind: synthetic_criteo\n  rows: 1000",
            )
            .replace("kind: gmf\n  dim: 8", "kind: dlrm\n  preset: small");
        let plain = parse(&dlrm).unwrap();
        let both = parse(&dlrm.replace("  epochs: 2\n", "  epochs: 2\n  precision: [f32, bf16]\n")).unwrap();
        assert_eq!(both.cells.len(), 2 * plain.cells.len());
        let f32_ids: std::collections::HashSet<_> =
            both.cells.iter().filter(|c| c.config.training.precision.is_f32()).map(|c| c.id.clone()).collect();
        assert_eq!(f32_ids, plain.cells.iter().map(|c| c.id.clone()).collect(), "f32 is not serialised: the ids stay");
        assert!(both.cells.iter().any(|c| c.config.training.precision == cqr_models::Precision::Bf16));
        // A method listed twice, once with a bf16 override: the override names the variant, so
        // the paired report compares it with the f32 base (its line carries no precision label).
        let twice = dlrm.replace(
            "  - name: hashing\n",
            "  - name: hashing\n  - name: hashing\n    overrides: { training: { precision: bf16 } }\n",
        );
        let cells = parse(&twice).unwrap().cells;
        assert!(
            cells.iter().any(|c| c.name == "hashing-b80-lr=0.01-s0" && c.config.training.precision.is_f32()),
            "{:?}",
            cells.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
        assert!(cells
            .iter()
            .any(|c| c.name == "hashing-b80-precision=bf16-lr=0.01-s0" && !c.config.training.precision.is_f32()));
        let e = err(&dlrm.replace("  epochs: 2\n", "  epochs: 2\n  precision: fp8\n"));
        assert!(e.contains("training") && e.contains("fp8"), "{e}");
    }

    #[test]
    fn two_different_cells_may_not_share_a_name() {
        // Same method twice, differing only in `init_scale` (not part of a name): refused rather
        // than merged into one line.
        let text = GOOD.replace("  - name: hashing\n", "  - name: hashing\n  - name: hashing\n    init_scale: 0.1\n");
        let e = err(&text);
        assert!(e.contains("both named") && e.contains("hashing-b80"), "{e}");
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn every_error_names_file_path_and_line() {
        let e = err(&GOOD.replace("  epochs: 2\n", "  epochs: 2\n  epoch: 5\n"));
        assert!(e.contains("exp.yaml:14") && e.contains("training") && e.contains("unknown field `epoch`"), "{e}");
        let e = err(&GOOD.replace("- name: hashing", "- name: hashnig"));
        assert!(e.contains("exp.yaml:15") && e.contains("methods[0].name") && e.contains("unknown method"), "{e}");
        let e = err(&GOOD.replace("  rows: 1000", "  rows: lots"));
        assert!(e.contains("exp.yaml:5") && e.contains("dataset.rows"), "{e}");
        let e = err(&GOOD.replace("budgets: [80, 160]", "budgets: []"));
        assert!(e.contains("budgets") && e.contains("non-empty"), "{e}");
        let e = err(&GOOD.replace("lr: [0.01, 0.001]", "lr: []"));
        assert!(e.contains("exp.yaml:12") && e.contains("training.lr") && e.contains("empty list"), "{e}");
        let e = err(&GOOD.replace("seeds: [0, 1]", "seeds: [0, 1]\nextra: 1"));
        assert!(e.contains("`extra`") && e.contains("unknown section"), "{e}");
        let e = err("name: t\ndataset: [unclosed\n");
        assert!(e.contains("exp.yaml:") && e.contains("invalid YAML"), "{e}");
        let e = err(&GOOD.replace("n_chunks: [2, 4]", "n_chunks: [2, 4]\n      bogus: 1"));
        assert!(
            e.contains("exp.yaml:17") && e.contains("methods[1].options") && e.contains("unknown field `bogus`"),
            "{e}"
        );
        let e = err(&GOOD.replace("n_chunks: [2, 4]", "n_chunks: 3"));
        assert!(e.contains("methods[1].options") && e.contains("not divisible"), "{e}");
        let e = err(&GOOD.replace("  rows: 1000", "  rows: 1000\n  colums: 3"));
        assert!(e.contains("exp.yaml:6") && e.contains("dataset.colums") && e.contains("unknown field"), "{e}");
        let e = err(&GOOD.replace("synthetic_gmf", "synthetic_gfm"));
        assert!(
            e.contains("exp.yaml:4") && e.contains("dataset.kind") && e.contains("unknown variant `synthetic_gfm`"),
            "{e}"
        );
        let e = err(&GOOD.replace("  kind: gmf", "  kind: gmf\n  depth: 3"));
        assert!(e.contains("model") && e.contains("unknown field `depth`"), "{e}");
        let e = err(&GOOD.replace("        epochs: 3", "        epochs: -3"));
        assert!(e.contains("methods[1].overrides.training.epochs") && e.contains("exp.yaml:21"), "{e}");
        // An override the grid's axes would overwrite is refused, never silently dropped.
        let e = err(&GOOD.replace("      training:\n        epochs: 3", "      budget: 12800"));
        assert!(e.contains("methods[1].overrides.budget") && e.contains("shared sections only"), "{e}");
    }

    #[test]
    fn least_squares_needs_no_methods() {
        let e = parse("name: ls\ndataset:\n  kind: least_squares\n  k: [1, 2]\nseeds: [0, 1, 2]\n").unwrap();
        assert_eq!(e.cells.len(), 6);
    }

    #[test]
    fn line_index_handles_lists() {
        let idx = line_index(GOOD);
        assert_eq!(idx["methods[1].options.n_chunks"], 18);
        assert_eq!(idx["training.lr"], 12);
    }

    #[test]
    fn the_click_backbones_take_presets_and_their_own_size_keys() {
        let spec = |kind, deep: Option<Vec<usize>>, cross_layers| ModelSpec {
            kind,
            preset: Some("criteo".into()),
            dim: Some(8),
            bottom: None,
            top: None,
            deep,
            cross_layers,
        };
        let ModelConfig::Dcn(c) = spec(ModelKind::Dcn, None, Some(2)).resolve().unwrap() else { panic!() };
        assert_eq!(c, DcnConfig { dim: 8, cross_layers: 2, deep: vec![256, 256, 256] });
        let ModelConfig::Deepfm(f) = spec(ModelKind::Deepfm, Some(vec![32]), None).resolve().unwrap() else { panic!() };
        assert_eq!(f, DeepFmConfig { dim: 8, deep: vec![32] });
        let ModelConfig::Wdl(w) = spec(ModelKind::Wdl, None, None).resolve().unwrap() else { panic!() };
        assert_eq!(w, WdlConfig { dim: 8, deep: vec![256, 256] });
        let e = spec(ModelKind::Wdl, None, Some(3)).resolve().unwrap_err().to_string();
        assert!(e.contains("model.cross_layers") && e.contains("Wdl"), "{e}");
        let e =
            ModelSpec { top: Some(vec![1]), ..spec(ModelKind::Deepfm, None, None) }.resolve().unwrap_err().to_string();
        assert!(e.contains("model.top"), "{e}");
        let e = spec(ModelKind::Dlrm, Some(vec![4]), None).resolve().unwrap_err().to_string();
        assert!(e.contains("model.deep"), "{e}");
        // `kaggle` names the same sizes as `criteo`, so one grid can list all click backbones.
        let ModelConfig::Dcn(k) =
            ModelSpec { preset: Some("kaggle".into()), ..spec(ModelKind::Dcn, None, Some(2)) }.resolve().unwrap()
        else {
            panic!()
        };
        assert_eq!(k, c);
        let e = ModelSpec { preset: Some("tiny".into()), ..spec(ModelKind::Dcn, None, None) }
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown preset `tiny`"), "{e}");
        // A DLRM model section serialises as before (cell ids unchanged).
        let d = serde_json::to_string(&ModelSpec {
            kind: ModelKind::Dlrm,
            preset: None,
            dim: None,
            bottom: None,
            top: None,
            deep: None,
            cross_layers: None,
        })
        .unwrap();
        assert_eq!(d, r#"{"kind":"dlrm","preset":null,"dim":null,"bottom":null,"top":null}"#);
    }

    #[test]
    fn a_preset_takes_the_datasets_numeric_width() {
        let spec = |bottom: Option<Vec<usize>>| ModelSpec {
            kind: ModelKind::Dlrm,
            preset: Some("small".into()),
            dim: None,
            bottom,
            top: None,
            deep: None,
            cross_layers: None,
        };
        let ModelConfig::Dlrm(c) = spec(None).resolve_for(2).unwrap() else { panic!() };
        assert_eq!(c.bottom, vec![2, 64, 16]);
        assert!(c.validate(2).is_ok());
        let ModelConfig::Dlrm(k) = ModelSpec { preset: Some("kaggle".into()), ..spec(None) }.resolve_for(5).unwrap()
        else {
            panic!()
        };
        assert_eq!(k.bottom, vec![5, 512, 256, 64, 16]);
        // No numeric columns: the bottom MLP is unused, the preset is left as it is.
        let ModelConfig::Dlrm(z) = spec(None).resolve_for(0).unwrap() else { panic!() };
        assert_eq!(z.bottom, vec![13, 64, 16]);
        // An explicit bottom is taken as written, and still checked against the data.
        let ModelConfig::Dlrm(e) = spec(Some(vec![13, 8, 16])).resolve_for(2).unwrap() else { panic!() };
        assert!(e.validate(2).unwrap_err().to_string().contains("must start with the 2 dense features"));
    }

    #[test]
    fn a_list_valued_key_is_never_a_grid_axis() {
        let text = "name: t\ndataset:\n  kind: table\n  path: x.csv\n  format: csv\n  label: y\n  categorical: [a, b]\n  numeric: []\nmodel:\n  kind: dlrm\nmethods:\n  - name: hashing\nbudgets: [64]\n";
        let e = parse(text).unwrap();
        assert_eq!(e.cells.len(), 1);
        let DatasetConfig::Table(t) = &e.cells[0].config.dataset else { panic!() };
        assert!(t.numeric.is_empty());
        // A list of lists there is an axis.
        let e = parse(&text.replace("numeric: []", "numeric: [[], [n1]]")).unwrap();
        assert_eq!(e.cells.len(), 2);
    }

    /// `quantize` on a method entry reaches the cell's method, names the cell, and leaves the
    /// unquantized entry's cell id as it was; a bad value names its line.
    #[test]
    fn quantize_is_a_method_entry_key() {
        let text = "name: t\ndataset:\n  kind: synthetic_criteo\n  rows: 1000\nmodel:\n  kind: dlrm\nmethods:\n  - name: cqr\n  - name: cqr\n    quantize: int8\n  - name: dense\n    quantize: int4\nbudgets: [64]\n";
        let e = parse(text).unwrap();
        let names: Vec<&str> = e.cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cqr-b64-s0", "cqr-b64-quantize=int8-s0", "dense-quantize=int4-s0"]);
        let q: Vec<Option<cqr_methods::Quantize>> =
            e.cells.iter().map(|c| c.config.method.as_ref().unwrap().quantize).collect();
        assert_eq!(q, [None, Some(cqr_methods::Quantize::Int8), Some(cqr_methods::Quantize::Int4)]);
        let plain =
            parse(&text.replace("  - name: cqr\n    quantize: int8\n  - name: dense\n    quantize: int4\n", ""))
                .unwrap();
        assert_eq!(plain.cells[0].id, e.cells[0].id);
        let bad = err(&text.replace("quantize: int8", "quantize: int3"));
        assert!(bad.contains("int3"), "{bad}");
    }

    /// `dense_under_cap: false` reaches the cell and names it; the default entry's id is the
    /// same as without the key, and a non-boolean value is an error.
    #[test]
    fn dense_under_cap_is_a_method_entry_key() {
        let text = "name: t\ndataset:\n  kind: synthetic_criteo\n  rows: 1000\nmodel:\n  kind: dlrm\nmethods:\n  - name: ttrec\n  - name: ttrec\n    dense_under_cap: false\nbudgets: [64]\n";
        let e = parse(text).unwrap();
        let names: Vec<&str> = e.cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ttrec-b64-s0", "ttrec-b64-dense_under_cap=false-s0"]);
        let flags: Vec<bool> = e.cells.iter().map(|c| c.config.method.as_ref().unwrap().dense_under_cap).collect();
        assert_eq!(flags, [true, false]);
        let plain = parse(&text.replace("  - name: ttrec\n    dense_under_cap: false\n", "")).unwrap();
        assert_eq!(plain.cells[0].id, e.cells[0].id);
        let bad = err(&text.replace("dense_under_cap: false", "dense_under_cap: sometimes"));
        assert!(bad.contains("dense_under_cap") || bad.contains("sometimes"), "{bad}");
    }

    /// A method that needs training counts (mdfreq) is checked on a stand-in table with counts:
    /// good options parse, bad ones name their line.
    #[test]
    fn count_methods_are_checked_before_running() {
        let text = "name: t\ndataset:\n  kind: synthetic_criteo\n  rows: 1000\nmodel:\n  kind: dlrm\nmethods:\n  - name: mdfreq\n    options: { blocks: 3 }\nbudgets: [640]\n";
        assert_eq!(parse(text).unwrap().cells.len(), 1);
        let bad = err(&text.replace("blocks: 3", "blocks: 40"));
        assert!(bad.contains("blocks must be in 1..=16"), "{bad}");
    }
}
