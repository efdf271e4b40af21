//! Experiment files: YAML sections, grids (any scalar may be a list), per-method overrides, and
//! errors that name the file, the key path and the line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use cqr_data::movielens::MovieLensLayout;
use cqr_data::records::fnv1a64;
use cqr_data::synthetic::{CriteoSynthConfig, GmfSynthConfig};
use cqr_data::{BadRowPolicy, PreprocessOptions, TableConfig};
use cqr_methods::least_squares::LeastSquaresConfig;
use cqr_models::{DlrmConfig, ModelConfig, TrainConfig};

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
}

impl ModelSpec {
    pub fn resolve(&self) -> Result<ModelConfig> {
        match self.kind {
            ModelKind::Gmf => Ok(ModelConfig::Gmf { dim: self.dim.unwrap_or(32) }),
            ModelKind::Dlrm => {
                let preset = self.preset.as_deref().unwrap_or("small");
                let mut c = DlrmConfig::preset(preset).ok_or_else(|| anyhow!("model.preset: unknown preset `{preset}` (known: kaggle, small)"))?;
                if let Some(d) = self.dim {
                    c.dim = d;
                    if let Some(last) = c.bottom.last_mut() {
                        *last = d;
                    }
                }
                if let Some(b) = &self.bottom {
                    c.bottom = b.clone();
                }
                if let Some(t) = &self.top {
                    c.top = t.clone();
                }
                Ok(ModelConfig::Dlrm(c))
            }
        }
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
    pub cells: Vec<Cell>,
}

const TOP_KEYS: &[&str] = &["name", "description", "dataset", "model", "training", "methods", "budgets", "budgets_per_dim", "seeds"];
/// Paths whose value is a list by nature (a list of lists there is a grid axis).
const LIST_VALUED: &[&str] = &["model.bottom", "model.top", "dataset.path", "dataset.categorical", "dataset.numeric"];

/// Line of each key path in block-style YAML (`a.b`, `methods[1].options.k`), 1-based.
pub fn line_index(text: &str) -> HashMap<String, usize> {
    let mut index = HashMap::new();
    let mut stack: Vec<(usize, String)> = vec![];
    let mut counters: HashMap<String, usize> = HashMap::new();
    let path_of = |stack: &Vec<(usize, String)>| -> String {
        let mut p = String::new();
        for (_, seg) in stack {
            if !seg.starts_with('[') && !p.is_empty() {
                p.push('.');
            }
            p.push_str(seg);
        }
        p
    };
    for (ln, raw) in text.lines().enumerate() {
        let line = match raw.find(" #") {
            Some(i) => &raw[..i],
            None => raw,
        };
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut ind = line.len() - line.trim_start().len();
        let mut rest = line.trim_start();
        loop {
            if rest == "-" || rest.starts_with("- ") {
                while stack.last().is_some_and(|(i, _)| *i >= ind) {
                    stack.pop();
                }
                let parent = path_of(&stack);
                let c = counters.entry(parent).or_insert(0);
                let seg = format!("[{c}]");
                *c += 1;
                stack.push((ind, seg));
                index.entry(path_of(&stack)).or_insert(ln + 1);
                let skip = rest.len().min(2);
                rest = rest[skip..].trim_start();
                ind += 2;
                if rest.is_empty() {
                    break;
                }
                continue;
            }
            if let Some(colon) = rest.find(':') {
                let key = &rest[..colon];
                let after = &rest[colon + 1..];
                if !key.is_empty() && !key.contains(['{', '[', '"', '\'', ' ']) && (after.is_empty() || after.starts_with(' ')) {
                    while stack.last().is_some_and(|(i, _)| *i >= ind) {
                        stack.pop();
                    }
                    stack.push((ind, key.to_string()));
                    index.insert(path_of(&stack), ln + 1);
                }
            }
            break;
        }
    }
    index
}

/// Finds the line of `path` or of its nearest ancestor.
fn line_of(index: &HashMap<String, usize>, path: &str) -> Option<usize> {
    let mut p = path.to_string();
    loop {
        if let Some(&l) = index.get(&p) {
            return Some(l);
        }
        let cut = p.rfind(['.', '['])?;
        p.truncate(cut);
    }
}

struct Ctx<'a> {
    file: &'a Path,
    index: HashMap<String, usize>,
}

impl Ctx<'_> {
    fn err(&self, path: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        match line_of(&self.index, path) {
            Some(l) => anyhow!("{}:{l}: `{path}`: {msg}", self.file.display()),
            None => anyhow!("{}: `{path}`: {msg}", self.file.display()),
        }
    }
}

/// Where a path of the resolved cell was written in the file: a method's own entry, its
/// overrides, or the shared sections.
fn file_path_for(cell_path: &str, method_index: Option<usize>, index: &HashMap<String, usize>) -> String {
    let mut candidates = vec![];
    if let Some(i) = method_index {
        if let Some(rest) = cell_path.strip_prefix("method") {
            candidates.push(format!("methods[{i}]{rest}"));
        }
        candidates.push(format!("methods[{i}].overrides.{cell_path}"));
    }
    candidates.push(cell_path.replace("budget", "budgets").replace("seed", "seeds"));
    candidates.push(cell_path.to_string());
    candidates.iter().find(|c| index.contains_key(*c)).cloned().unwrap_or_else(|| cell_path.to_string())
}

/// A grid axis: where it sits in the cell value, and its values.
#[derive(Clone)]
struct Axis {
    path: Vec<String>,
    label: String,
    values: Vec<Value>,
}

fn collect_axes(v: &Value, path: &mut Vec<String>, mi: Option<usize>, ctx: &Ctx, axes: &mut Vec<Axis>) -> Result<()> {
    let dotted = path.join(".");
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let k = k.as_str().ok_or_else(|| ctx.err(&file_path_for(&dotted, mi, &ctx.index), "keys must be strings"))?;
                path.push(k.to_string());
                collect_axes(child, path, mi, ctx, axes)?;
                path.pop();
            }
        }
        Value::Sequence(s) => {
            let literal = LIST_VALUED.contains(&dotted.as_str());
            let is_grid = !literal || s.iter().all(|x| x.is_sequence());
            if is_grid {
                if s.is_empty() {
                    return Err(ctx.err(&file_path_for(&dotted, mi, &ctx.index), "empty list: a grid axis needs at least one value"));
                }
                axes.push(Axis { path: path.clone(), label: path.last().cloned().unwrap_or_default(), values: s.clone() });
            }
        }
        _ => {}
    }
    Ok(())
}

fn set_path(v: &mut Value, path: &[String], value: Value) {
    let Value::Mapping(m) = v else { return };
    let key = Value::String(path[0].clone());
    if path.len() == 1 {
        m.insert(key, value);
    } else if let Some(child) = m.get_mut(&key) {
        set_path(child, &path[1..], value);
    }
}

fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) if bv.is_mapping() && v.is_mapping() => deep_merge(bv, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn short(v: &Value) -> String {
    if let Some(k) = v.get("kind").or_else(|| v.get("name")) {
        return short(k);
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Stable id: FNV-1a 64 of the config's canonical JSON (object keys sorted).
pub fn cell_id(c: &CellConfig) -> String {
    let v = serde_json::to_value(c).expect("config serialises");
    format!("{:016x}", fnv1a64(serde_json::to_string(&v).expect("json").as_bytes()))
}

pub fn load_experiment(file: &Path) -> Result<Experiment> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read experiment file", file.display()))?;
    parse_experiment(&text, file)
}

pub fn parse_experiment(text: &str, file: &Path) -> Result<Experiment> {
    let ctx = Ctx { file, index: line_index(text) };
    let root: Value = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(l) => anyhow!("{}:{}:{}: invalid YAML: {e}", file.display(), l.line(), l.column()),
        None => anyhow!("{}: invalid YAML: {e}", file.display()),
    })?;
    let Value::Mapping(top) = root else { bail!("{}: the experiment must be a mapping of sections", file.display()) };
    for k in top.keys() {
        let k = k.as_str().unwrap_or("?");
        if !TOP_KEYS.contains(&k) {
            return Err(ctx.err(k, format!("unknown section (expected one of: {})", TOP_KEYS.join(", "))));
        }
    }
    let get = |k: &str| top.get(Value::String(k.into()));
    let name = match get("name") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => s.clone(),
        Some(_) => return Err(ctx.err("name", "must be a non-empty string of letters, digits, '-' and '_'")),
        None => file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "experiment".into()),
    };
    let dataset = get("dataset").ok_or_else(|| ctx.err("dataset", "missing section"))?;
    let is_ls = dataset.get("kind").and_then(|k| k.as_str()) == Some("least_squares");
    let seeds: Vec<Value> = match get("seeds") {
        None => vec![Value::Number(0.into())],
        Some(Value::Sequence(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => vec![Value::Number(n.clone())],
        Some(_) => return Err(ctx.err("seeds", "must be a non-empty list of integers")),
    };
    // Base cell value: the shared sections.
    let mut base = Mapping::new();
    base.insert("experiment".into(), Value::String(name.clone()));
    for k in ["dataset", "model", "training"] {
        if let Some(v) = get(k) {
            base.insert(k.into(), v.clone());
        }
    }
    // (method entry, method index, budgets) combinations.
    let mut method_entries: Vec<(Option<usize>, Option<Value>)> = vec![];
    let mut budgets: Vec<(Value, &str)> = vec![];
    if is_ls {
        method_entries.push((None, None));
    } else {
        let Some(Value::Sequence(ms)) = get("methods") else { return Err(ctx.err("methods", "missing or not a list of methods")) };
        if ms.is_empty() {
            return Err(ctx.err("methods", "empty list: nothing to run"));
        }
        for (i, m) in ms.iter().enumerate() {
            let p = format!("methods[{i}]");
            let name = m.get("name").and_then(|n| n.as_str()).ok_or_else(|| ctx.err(&p, "each method needs a `name`"))?;
            if !cqr_methods::method_names().contains(&name) {
                return Err(ctx.err(&format!("{p}.name"), format!("unknown method `{name}` (known: {})", cqr_methods::method_names().join(", "))));
            }
            if let Value::Mapping(mm) = m {
                for k in mm.keys() {
                    let k = k.as_str().unwrap_or("?");
                    if !["name", "options", "overrides", "init_scale"].contains(&k) {
                        return Err(ctx.err(&format!("{p}.{k}"), "unknown key (expected name, options, overrides, init_scale)"));
                    }
                }
            }
            method_entries.push((Some(i), Some(m.clone())));
        }
        let per_dim = get("budgets_per_dim");
        let (list, key) = match (get("budgets"), per_dim) {
            (Some(b), None) => (b, "budgets"),
            (None, Some(b)) => (b, "budgets_per_dim"),
            (Some(_), Some(_)) => return Err(ctx.err("budgets_per_dim", "give either budgets or budgets_per_dim, not both")),
            (None, None) if ms.iter().all(|m| m.get("name").and_then(|n| n.as_str()) == Some("dense")) => (&Value::Null, "budgets"),
            (None, None) => return Err(ctx.err("budgets", "missing: a list of per-table parameter caps")),
        };
        match list {
            Value::Sequence(s) if !s.is_empty() => budgets.extend(s.iter().map(|v| (v.clone(), key))),
            Value::Number(_) => budgets.push((list.clone(), key)),
            Value::Null => {}
            _ => return Err(ctx.err(key, "must be a non-empty list of positive integers")),
        }
    }
    let mut cells = vec![];
    for (mi, entry) in &method_entries {
        let mut cell_base = Value::Mapping(base.clone());
        if let Some(m) = entry {
            if let Some(o) = m.get("overrides") {
                deep_merge(&mut cell_base, o);
            }
            let mut method = Mapping::new();
            for k in ["name", "options", "init_scale"] {
                if let Some(v) = m.get(k) {
                    method.insert(k.into(), v.clone());
                }
            }
            if let Value::Mapping(cb) = &mut cell_base {
                cb.insert("method".into(), Value::Mapping(method));
            }
        }
        let mut axes = vec![];
        collect_axes(&cell_base, &mut vec![], *mi, &ctx, &mut axes)?;
        // A method listed more than once: its scalar options name the variant (`cqr-b4800-
        // residual=robe-s0`), so tables and charts keep the entries apart.
        let method_name = |e: &Option<Value>| e.as_ref().and_then(|m| m.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        // Only options that not every entry of the name shares are named, so an entry's name does
        // not change when a sibling is added.
        let options_of = |e: &Option<Value>| match e.as_ref().and_then(|m| m.get("options")) {
            Some(Value::Mapping(o)) => o.iter().filter(|(_, v)| !v.is_sequence()).map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => vec![],
        };
        let siblings: Vec<Vec<(Value, Value)>> = method_entries.iter().filter(|(_, e)| method_name(e) == method_name(entry)).map(|(_, e)| options_of(e)).collect();
        let option_labels: Vec<String> = options_of(entry)
            .into_iter()
            .filter(|kv| siblings.len() > 1 && !siblings.iter().all(|o| o.contains(kv)))
            .map(|(k, v)| format!("{}={}", k.as_str().unwrap_or("?"), short(&v)))
            .collect();
        // Cartesian product over axes x budgets x seeds.
        let mut combos: Vec<Vec<usize>> = vec![vec![]];
        for a in &axes {
            combos = combos.into_iter().flat_map(|c| (0..a.values.len()).map(move |i| { let mut c = c.clone(); c.push(i); c })).collect();
        }
        // The dense table ignores the budget: one cell, not one per budget.
        let is_dense = entry.as_ref().and_then(|m| m.get("name")).and_then(|n| n.as_str()) == Some("dense");
        let budget_list: Vec<Option<&(Value, &str)>> = if budgets.is_empty() || is_dense { vec![None] } else { budgets.iter().map(Some).collect() };
        for combo in &combos {
            let mut v = cell_base.clone();
            let mut label = option_labels.clone();
            for (a, &i) in axes.iter().zip(combo) {
                set_path(&mut v, &a.path, a.values[i].clone());
                label.push(format!("{}={}", a.label, short(&a.values[i])));
            }
            for b in &budget_list {
                for s in &seeds {
                    let mut v = v.clone();
                    if let Value::Mapping(m) = &mut v {
                        m.insert("seed".into(), s.clone());
                        if let Some((bv, key)) = b {
                            let budget = resolve_budget(bv, key, &v_dim(m), &ctx)?;
                            m.insert("budget".into(), Value::Number(budget.into()));
                        }
                    }
                    let config = to_config(&v, *mi, &ctx)?;
                    let mut name_parts = vec![];
                    if let Some(m) = &config.method {
                        name_parts.push(m.name.clone());
                    } else {
                        name_parts.push("least-squares".into());
                    }
                    if let Some(b) = config.budget {
                        name_parts.push(format!("b{b}"));
                    }
                    name_parts.extend(label.iter().cloned());
                    name_parts.push(format!("s{}", config.seed));
                    cells.push(Cell { id: cell_id(&config), name: name_parts.join("-"), config });
                }
            }
        }
    }
    // Two identical cells would run twice and collide on disk.
    let mut seen = HashMap::new();
    for c in &cells {
        if let Some(prev) = seen.insert(c.id.clone(), c.name.clone()) {
            bail!("{}: cells `{prev}` and `{}` resolve to the same configuration", file.display(), c.name);
        }
    }
    Ok(Experiment { name, file: file.to_path_buf(), cells })
}

/// The embedding dim from `model.dim` or the model preset (for `budgets_per_dim`).
fn v_dim(m: &Mapping) -> Option<u64> {
    let model = m.get("model")?;
    if let Some(d) = model.get("dim").and_then(|d| d.as_u64()) {
        return Some(d);
    }
    match model.get("kind").and_then(|k| k.as_str()) {
        Some("gmf") => Some(32),
        _ => {
            let preset = model.get("preset").and_then(|p| p.as_str()).unwrap_or("small");
            DlrmConfig::preset(preset).map(|c| c.dim as u64)
        }
    }
}

fn resolve_budget(v: &Value, key: &str, dim: &Option<u64>, ctx: &Ctx) -> Result<u64> {
    let n = v.as_u64().filter(|&n| n > 0).ok_or_else(|| ctx.err(key, format!("budgets must be positive integers, found {}", short(v))))?;
    if key == "budgets_per_dim" {
        let d = dim.ok_or_else(|| ctx.err(key, "budgets_per_dim needs the model's dim"))?;
        Ok(n * d)
    } else {
        Ok(n)
    }
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

fn to_config(v: &Value, method_index: Option<usize>, ctx: &Ctx) -> Result<CellConfig> {
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
    if !matches!(cfg.dataset, DatasetConfig::LeastSquares(_)) {
        let Some(spec) = cfg.model.as_ref() else { return Err(ctx.err("model", "missing section")) };
        let model = spec.resolve().map_err(|e| ctx.err("model", e))?;
        if let (Some(m), Some(i)) = (&cfg.method, method_index) {
            // Build the method on a stand-in table to check its options now, not hours later.
            // Budget problems depend on the real vocabularies and surface when the cell runs.
            let dim = model.dim();
            // The training schedule is the cell's (steps per epoch: a stand-in, the data decides).
            let p = cqr_methods::MethodParams::new(4096, dim, 1024 * dim as u64)
                .with_epochs(cfg.training.epochs)
                .with_steps(1000, cfg.training.eval_every_steps)
                .with_options(m.options.clone());
            match cqr_methods::build_method(&m.name, &p) {
                Err(e @ (cqr_methods::MethodError::BadOptions { .. } | cqr_methods::MethodError::UnknownMethod(_))) => {
                    return Err(ctx.err(&format!("methods[{i}].options"), e));
                }
                _ => {}
            }
        }
        if let Err(e) = cfg.training.validate() {
            return Err(ctx.err("training", e));
        }
        if let (ModelConfig::Gmf { .. }, DatasetConfig::SyntheticCriteo(_) | DatasetConfig::Criteo(_) | DatasetConfig::Avazu(_)) = (&model, &cfg.dataset) {
            return Err(ctx.err("model.kind", "gmf needs a two-column (user, item) dataset: movielens or synthetic_gmf"));
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
        assert!(e.cells.iter().filter(|c| c.config.method.as_ref().unwrap().name == "hashing").all(|c| c.config.training.epochs == 2));
        assert!(cqr.iter().any(|c| c.name == "cqr-b160-lr=0.001-n_chunks=4-s1"), "{:?}", cqr.iter().map(|c| &c.name).collect::<Vec<_>>());
    }

    #[test]
    fn cell_ids_are_stable_and_distinct() {
        let a = parse(GOOD).unwrap();
        let b = parse(GOOD).unwrap();
        assert_eq!(a.cells.iter().map(|c| &c.id).collect::<Vec<_>>(), b.cells.iter().map(|c| &c.id).collect::<Vec<_>>());
        let ids: std::collections::HashSet<_> = a.cells.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids.len(), a.cells.len());
        // Pinned: a change of id would orphan every stored result.
        let first = &a.cells[0];
        assert_eq!(first.id, cell_id(&first.config));
        assert_eq!(first.id.len(), 16);
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
        assert!(e.contains("exp.yaml:17") && e.contains("methods[1].options") && e.contains("unknown field `bogus`"), "{e}");
        let e = err(&GOOD.replace("n_chunks: [2, 4]", "n_chunks: 3"));
        assert!(e.contains("methods[1].options") && e.contains("not divisible"), "{e}");
        let e = err(&GOOD.replace("  rows: 1000", "  rows: 1000\n  colums: 3"));
        assert!(e.contains("exp.yaml:6") && e.contains("dataset.colums") && e.contains("unknown field"), "{e}");
        let e = err(&GOOD.replace("synthetic_gmf", "synthetic_gfm"));
        assert!(e.contains("exp.yaml:4") && e.contains("dataset.kind") && e.contains("unknown variant `synthetic_gfm`"), "{e}");
        let e = err(&GOOD.replace("  kind: gmf", "  kind: gmf\n  depth: 3"));
        assert!(e.contains("model") && e.contains("unknown field `depth`"), "{e}");
        let e = err(&GOOD.replace("        epochs: 3", "        epochs: -3"));
        assert!(e.contains("methods[1].overrides.training.epochs") && e.contains("exp.yaml:21"), "{e}");
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
}
