//! Grid expansion: any scalar of the shared sections, a method entry or its overrides may be a
//! list (a grid axis); cells are the Cartesian product of the axes, budgets and seeds.

use super::name::CellName;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_yaml::{Mapping, Value};

use cqr_data::records::fnv1a64;
use cqr_models::DlrmConfig;

use super::lines::{file_path_for, line_index, Ctx};
use super::tune::{round3, setting_label, Setting, TuneSpec, DEFAULT_FINAL_SEEDS};
use super::{to_config, Cell, CellConfig, Experiment, TrialTag, TuneGroup, TunePlan, TunedTrial};

const TOP_KEYS: &[&str] =
    &["name", "description", "dataset", "model", "training", "methods", "budgets", "budgets_per_dim", "seeds", "tune"];
/// Paths whose value is a list by nature (a list of lists there is a grid axis).
const LIST_VALUED: &[&str] = &["model.bottom", "model.top", "dataset.path", "dataset.categorical", "dataset.numeric"];

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
                let k = k
                    .as_str()
                    .ok_or_else(|| ctx.err(&file_path_for(&dotted, mi, &ctx.index), "keys must be strings"))?;
                path.push(k.to_string());
                collect_axes(child, path, mi, ctx, axes)?;
                path.pop();
            }
        }
        Value::Sequence(s) => {
            // A list-valued key (column names, layer sizes) is a grid axis only as a non-empty
            // list of lists; its own value, empty or not, is never one.
            let literal = LIST_VALUED.contains(&dotted.as_str());
            let is_grid = !literal || (!s.is_empty() && s.iter().all(|x| x.is_sequence()));
            if is_grid {
                if s.is_empty() {
                    return Err(ctx.err(
                        &file_path_for(&dotted, mi, &ctx.index),
                        "empty list: a grid axis needs at least one value",
                    ));
                }
                axes.push(Axis {
                    path: path.clone(),
                    label: path.last().cloned().unwrap_or_default(),
                    values: s.clone(),
                });
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

/// Sets `path` in `v`, creating the mappings on the way (a tuned key need not be written in
/// the file).
fn set_path_create(v: &mut Value, path: &[&str], value: Value) {
    let Value::Mapping(m) = v else { return };
    let key = Value::String(path[0].to_string());
    if path.len() == 1 {
        m.insert(key, value);
        return;
    }
    let child = m.entry(key).or_insert_with(|| Value::Mapping(Mapping::new()));
    if !child.is_mapping() {
        *child = Value::Mapping(Mapping::new());
    }
    set_path_create(child, &path[1..], value);
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

pub fn parse_experiment(text: &str, file: &Path) -> Result<Experiment> {
    let ctx = Ctx { file, index: line_index(text) };
    let top = top_sections(text, &ctx)?;
    let get = |k: &str| top.get(Value::String(k.into()));
    let name = experiment_name(get("name"), &ctx)?;
    let dataset = get("dataset").ok_or_else(|| ctx.err("dataset", "missing section"))?;
    let is_ls = dataset.get("kind").and_then(|k| k.as_str()) == Some("least_squares");
    let tune_v = get("tune");
    let seeds: Vec<Value> = match get("seeds") {
        // A tuned grid re-runs each pick on 5 seeds unless told otherwise (BARS's protocol).
        None if tune_v.is_some() => DEFAULT_FINAL_SEEDS.iter().map(|&s| Value::Number(s.into())).collect(),
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
    let (entries, budgets) = if is_ls {
        (vec![(None, None)], vec![])
    } else {
        (method_entries(get("methods"), &ctx)?, budget_list(&top, &ctx)?)
    };
    let grid = Grid { base: Value::Mapping(base), entries: &entries, budgets: &budgets, seeds: &seeds, ctx: &ctx };
    if let Some(tv) = tune_v {
        if is_ls {
            return Err(ctx.err("tune", "least squares has nothing to tune"));
        }
        let plan = grid.tune_plan(tv)?;
        return Ok(Experiment { name, file: file.to_path_buf(), cells: vec![], tune: Some(plan) });
    }
    let mut cells = vec![];
    for (mi, entry) in &entries {
        cells.extend(grid.expand(*mi, entry)?);
    }
    // Two identical cells would run twice and collide on disk; two different cells of one name on
    // one dataset would merge into one line of its tables and charts (the tables group lines per
    // dataset, so one name on several datasets is fine).
    let (mut ids, mut names) = (HashMap::new(), HashSet::new());
    for c in &cells {
        if let Some(prev) = ids.insert(c.id.clone(), c.name.clone()) {
            bail!("{}: cells `{prev}` and `{}` resolve to the same configuration", file.display(), c.name);
        }
        if !names.insert((c.name.clone(), serde_json::to_string(&c.config.dataset).unwrap_or_default())) {
            bail!("{}: two different cells are both named `{}`; give the entries of that method options or overrides that tell them apart", file.display(), c.name);
        }
    }
    Ok(Experiment { name, file: file.to_path_buf(), cells, tune: None })
}

/// The top-level mapping, every key a known section.
fn top_sections(text: &str, ctx: &Ctx) -> Result<Mapping> {
    let file = ctx.file;
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
    Ok(top)
}

fn experiment_name(v: Option<&Value>, ctx: &Ctx) -> Result<String> {
    match v {
        Some(Value::String(s))
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(s.clone())
        }
        Some(_) => Err(ctx.err("name", "must be a non-empty string of letters, digits, '-' and '_'")),
        None => {
            Ok(ctx.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "experiment".into()))
        }
    }
}

/// A method entry of the file (its index and YAML value); `(None, None)` for least squares.
type Entry = (Option<usize>, Option<Value>);

/// The `methods:` list, each entry with a known name and known keys.
fn method_entries(methods: Option<&Value>, ctx: &Ctx) -> Result<Vec<Entry>> {
    let Some(Value::Sequence(ms)) = methods else { return Err(ctx.err("methods", "missing or not a list of methods")) };
    if ms.is_empty() {
        return Err(ctx.err("methods", "empty list: nothing to run"));
    }
    let mut out = vec![];
    for (i, m) in ms.iter().enumerate() {
        let p = format!("methods[{i}]");
        let name = m.get("name").and_then(|n| n.as_str()).ok_or_else(|| ctx.err(&p, "each method needs a `name`"))?;
        if !cqr_methods::method_names().contains(&name) {
            return Err(ctx.err(
                &format!("{p}.name"),
                format!("unknown method `{name}` (known: {})", cqr_methods::method_names().join(", ")),
            ));
        }
        if let Value::Mapping(mm) = m {
            for k in mm.keys() {
                let k = k.as_str().unwrap_or("?");
                if !["name", "options", "overrides", "init_scale", "quantize", "dense_under_cap"].contains(&k) {
                    return Err(ctx.err(
                        &format!("{p}.{k}"),
                        "unknown key (expected name, options, overrides, init_scale, quantize, dense_under_cap)",
                    ));
                }
            }
            check_overrides(ctx, &p, mm.get("overrides"))?;
        }
        out.push((Some(i), Some(m.clone())));
    }
    Ok(out)
}

/// A method entry's `overrides`: a map of the shared sections it changes. Anything else (a
/// `budget`, a `seeds`) would be overwritten by the grid's own axes, so it is refused rather than
/// silently ignored.
fn check_overrides(ctx: &Ctx, entry: &str, overrides: Option<&Value>) -> Result<()> {
    const SECTIONS: [&str; 3] = ["dataset", "model", "training"];
    let Some(o) = overrides else { return Ok(()) };
    let Value::Mapping(o) = o else {
        return Err(ctx.err(&format!("{entry}.overrides"), "expected a map of sections (dataset, model, training)"));
    };
    for k in o.keys() {
        let k = k.as_str().unwrap_or("?");
        if !SECTIONS.contains(&k) {
            return Err(ctx.err(
                &format!("{entry}.overrides.{k}"),
                "overrides change the shared sections only (dataset, model, training); budgets and seeds are the grid's own axes for every method: list another experiment file for other caps",
            ));
        }
    }
    Ok(())
}

/// The budgets (each with the key it came from: `budgets` or `budgets_per_dim`).
fn budget_list(top: &Mapping, ctx: &Ctx) -> Result<Vec<(Value, &'static str)>> {
    let get = |k: &str| top.get(Value::String(k.into()));
    let only_dense = match get("methods") {
        Some(Value::Sequence(ms)) => ms.iter().all(|m| m.get("name").and_then(|n| n.as_str()) == Some("dense")),
        _ => false,
    };
    let (list, key) = match (get("budgets"), get("budgets_per_dim")) {
        (Some(b), None) => (b, "budgets"),
        (None, Some(b)) => (b, "budgets_per_dim"),
        (Some(_), Some(_)) => {
            return Err(ctx.err("budgets_per_dim", "give either budgets or budgets_per_dim, not both"))
        }
        (None, None) if only_dense => return Ok(vec![]),
        (None, None) => return Err(ctx.err("budgets", "missing: a list of per-table parameter caps")),
    };
    match list {
        Value::Sequence(s) if !s.is_empty() => Ok(s.iter().map(|v| (v.clone(), key)).collect()),
        Value::Number(_) => Ok(vec![(list.clone(), key)]),
        _ => Err(ctx.err(key, "must be a non-empty list of positive integers")),
    }
}

/// What every method entry expands against.
struct Grid<'a> {
    base: Value,
    entries: &'a [Entry],
    budgets: &'a [(Value, &'static str)],
    seeds: &'a [Value],
    ctx: &'a Ctx<'a>,
}

impl Grid<'_> {
    /// The shared sections with a method entry's overrides merged in and its `method` set.
    fn entry_base(&self, entry: &Option<Value>) -> Value {
        let mut cell_base = self.base.clone();
        if let Some(m) = entry {
            if let Some(o) = m.get("overrides") {
                deep_merge(&mut cell_base, o);
            }
            let mut method = Mapping::new();
            for k in ["name", "options", "init_scale", "quantize", "dense_under_cap"] {
                if let Some(v) = m.get(k) {
                    method.insert(k.into(), v.clone());
                }
            }
            if let Value::Mapping(cb) = &mut cell_base {
                cb.insert("method".into(), Value::Mapping(method));
            }
        }
        cell_base
    }

    /// A method listed more than once: its scalar options and scalar overrides name the variant
    /// (`cqr-b4800-residual=robe-s0`, `hashing-b320-precision=bf16-s0`), so tables and charts
    /// keep the entries apart and the paired report compares each variant with the base. Only
    /// values that not every entry of the name shares are named, so a name does not change when a
    /// sibling is added.
    fn option_labels(&self, entry: &Option<Value>) -> Vec<String> {
        let method_name =
            |e: &Option<Value>| e.as_ref().and_then(|m| m.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        let scalars = |m: Option<&Value>| -> Vec<(Value, Value)> {
            match m {
                Some(Value::Mapping(o)) => o
                    .iter()
                    .filter(|(_, v)| !v.is_sequence() && !v.is_mapping())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                _ => vec![],
            }
        };
        let options_of = |e: &Option<Value>| -> Vec<(Value, Value)> {
            let mut out = scalars(e.as_ref().and_then(|m| m.get("options")));
            if let Some(Value::Mapping(sections)) = e.as_ref().and_then(|m| m.get("overrides")) {
                sections.values().for_each(|section| out.extend(scalars(Some(section))));
            }
            out
        };
        let siblings: Vec<Vec<(Value, Value)>> = self
            .entries
            .iter()
            .filter(|(_, e)| method_name(e) == method_name(entry))
            .map(|(_, e)| options_of(e))
            .collect();
        let mut labels: Vec<String> = options_of(entry)
            .into_iter()
            .filter(|kv| siblings.len() > 1 && !siblings.iter().all(|o| o.contains(kv)))
            .map(|(k, v)| format!("{}={}", k.as_str().unwrap_or("?"), short(&v)))
            .collect();
        // Quantized cells are always named so (their method is the unquantized one's).
        if let Some(q) = entry.as_ref().and_then(|m| m.get("quantize")) {
            labels.push(format!("quantize={}", short(q)));
        }
        if let Some(d) = entry.as_ref().and_then(|m| m.get("dense_under_cap")) {
            labels.push(format!("dense_under_cap={}", short(d)));
        }
        labels
    }

    /// Every cell of one method entry: its grid axes x budgets x seeds.
    fn expand(&self, mi: Option<usize>, entry: &Option<Value>) -> Result<Vec<Cell>> {
        let cell_base = self.entry_base(entry);
        let mut axes = vec![];
        collect_axes(&cell_base, &mut vec![], mi, self.ctx, &mut axes)?;
        let option_labels = self.option_labels(entry);
        let combos = grid_points(&axes);
        // The dense table ignores the budget: one cell, not one per budget.
        let is_dense = entry.as_ref().and_then(|m| m.get("name")).and_then(|n| n.as_str()) == Some("dense");
        let budgets: Vec<Option<&(Value, &str)>> =
            if self.budgets.is_empty() || is_dense { vec![None] } else { self.budgets.iter().map(Some).collect() };
        let mut cells = vec![];
        for combo in &combos {
            let mut v = cell_base.clone();
            let mut label = option_labels.clone();
            for (a, &i) in axes.iter().zip(combo) {
                set_path(&mut v, &a.path, a.values[i].clone());
                label.push(format!("{}={}", a.label, short(&a.values[i])));
            }
            for b in &budgets {
                for s in self.seeds {
                    cells.push(self.cell(&v, mi, *b, s, &label)?);
                }
            }
        }
        Ok(cells)
    }

    /// Every method entry × grid point × budget as a tuning group: its trials, each with its
    /// partial runs (halving rungs), full runs on the tuning seeds, and final cells (the
    /// experiment's seeds) to run if it is picked.
    fn tune_plan(&self, tv: &Value) -> Result<TunePlan> {
        let final_seeds: Vec<u64> = self.seeds.iter().filter_map(|s| s.as_u64()).collect();
        let spec = TuneSpec::parse(tv, &final_seeds).map_err(|e| self.ctx.err("tune", e))?;
        let names: Vec<&str> = self.entries.iter().filter_map(|(_, e)| e.as_ref()?.get("name")?.as_str()).collect();
        let trials_per_group = spec.check_equal(&names).map_err(|e| self.ctx.err("tune", e))?;
        let mut groups = vec![];
        for (mi, entry) in self.entries {
            groups.extend(self.expand_tuned(*mi, entry, &spec)?);
        }
        Ok(TunePlan { spec, trials_per_group, groups })
    }

    fn expand_tuned(&self, mi: Option<usize>, entry: &Option<Value>, spec: &TuneSpec) -> Result<Vec<TuneGroup>> {
        let method =
            entry.as_ref().and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or_default().to_string();
        let trials = spec.trials_for(&method).map_err(|e| self.ctx.err("tune", e))?;
        let cell_base = self.entry_base(entry);
        let mut axes = vec![];
        collect_axes(&cell_base, &mut vec![], mi, self.ctx, &mut axes)?;
        for a in &axes {
            if trials.first().is_some_and(|t| t.iter().any(|(k, _)| *k == a.path.join("."))) {
                return Err(self
                    .ctx
                    .err("tune", format!("`{}` is both a grid axis and a tuned key", a.path.join("."))));
            }
        }
        let option_labels = self.option_labels(entry);
        let combos = grid_points(&axes);
        let is_dense = method == "dense";
        let budgets: Vec<Option<&(Value, &str)>> =
            if self.budgets.is_empty() || is_dense { vec![None] } else { self.budgets.iter().map(Some).collect() };
        let rungs = spec.halving.map(|h| h.rungs()).unwrap_or_default();
        let mut groups = vec![];
        for combo in &combos {
            let mut v = cell_base.clone();
            let mut label = option_labels.clone();
            for (a, &i) in axes.iter().zip(combo) {
                set_path(&mut v, &a.path, a.values[i].clone());
                label.push(format!("{}={}", a.label, short(&a.values[i])));
            }
            for b in &budgets {
                let mut group_trials = vec![];
                for (k, setting) in trials.iter().enumerate() {
                    group_trials.push(self.trial(&v, mi, *b, &label, k, setting, &rungs, spec)?);
                }
                let line = CellName::parse(&group_trials[0].finals[0].name).variant();
                let budget = group_trials[0].finals[0].config.budget;
                groups.push(TuneGroup { line, method: method.clone(), budget, trials: group_trials });
            }
        }
        Ok(groups)
    }

    /// One trial of a group: `setting` applied to the grid point `v`.
    #[allow(clippy::too_many_arguments)]
    fn trial(
        &self,
        v: &Value,
        mi: Option<usize>,
        budget: Option<&(Value, &str)>,
        label: &[String],
        k: usize,
        setting: &Setting,
        rungs: &[f64],
        spec: &TuneSpec,
    ) -> Result<TunedTrial> {
        let mut tv = v.clone();
        for (path, val) in setting {
            set_path_create(&mut tv, &path.split('.').collect::<Vec<_>>(), val.clone());
        }
        let mut tuning_label = label.to_vec();
        tuning_label.push(setting_label(setting));
        let seed_values: Vec<Value> = spec.tuning_seeds.iter().map(|&s| Value::Number(s.into())).collect();
        let mut rung_cells = vec![];
        for &f in rungs {
            let mut rv = tv.clone();
            set_path_create(&mut rv, &["training", "stop_after"], Value::Number(f.into()));
            let mut l = tuning_label.clone();
            l.push(format!("r{}", round3(f)));
            rung_cells.push(
                seed_values
                    .iter()
                    .map(|s| self.tagged_cell(&rv, mi, budget, s, &l, Some(k)))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let full = seed_values
            .iter()
            .map(|s| self.tagged_cell(&tv, mi, budget, s, &tuning_label, Some(k)))
            .collect::<Result<Vec<_>>>()?;
        let finals =
            self.seeds.iter().map(|s| self.tagged_cell(&tv, mi, budget, s, label, None)).collect::<Result<Vec<_>>>()?;
        Ok(TunedTrial { setting: setting.clone(), rungs: rung_cells, full, finals })
    }

    /// [`Self::cell`] of a tuning run (`trial` set: marked in its config, so it never mixes
    /// with the final cells) or a final run.
    fn tagged_cell(
        &self,
        v: &Value,
        mi: Option<usize>,
        budget: Option<&(Value, &str)>,
        seed: &Value,
        label: &[String],
        trial: Option<usize>,
    ) -> Result<Cell> {
        let mut v = v.clone();
        if let (Some(t), Value::Mapping(m)) = (trial, &mut v) {
            let tag = serde_yaml::to_value(TrialTag { trial: t }).expect("serialises");
            m.insert("tuning".into(), tag);
        }
        self.cell(&v, mi, budget, seed, label)
    }

    /// One cell: the grid point `v` with its budget and seed, checked and named.
    fn cell(
        &self,
        v: &Value,
        mi: Option<usize>,
        budget: Option<&(Value, &str)>,
        seed: &Value,
        label: &[String],
    ) -> Result<Cell> {
        let mut v = v.clone();
        if let Value::Mapping(m) = &mut v {
            m.insert("seed".into(), seed.clone());
            if let Some((bv, key)) = budget {
                let b = resolve_budget(bv, key, &v_dim(m), self.ctx)?;
                m.insert("budget".into(), Value::Number(b.into()));
            }
        }
        let config = to_config(&v, mi, self.ctx)?;
        let method = config.method.as_ref().map(|m| m.name.clone()).unwrap_or_else(|| "least-squares".into());
        let mut name = CellName { method, budget: config.budget, labels: vec![], rung: None, seed: Some(config.seed) };
        for l in label {
            match l.split_once('=') {
                Some((k, v)) => name.labels.push((k.to_string(), v.to_string())),
                None => name.rung = Some(l.trim_start_matches('r').to_string()),
            }
        }
        Ok(Cell { id: cell_id(&config), name: name.to_string(), config })
    }
}

/// Every grid point of the axes: one value index per axis (their cross product, first axis
/// slowest).
fn grid_points(axes: &[Axis]) -> Vec<Vec<usize>> {
    let mut combos: Vec<Vec<usize>> = vec![vec![]];
    for a in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                (0..a.values.len()).map(move |i| {
                    let mut c = c.clone();
                    c.push(i);
                    c
                })
            })
            .collect();
    }
    combos
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
    let n = v
        .as_u64()
        .filter(|&n| n > 0)
        .ok_or_else(|| ctx.err(key, format!("budgets must be positive integers, found {}", short(v))))?;
    if key == "budgets_per_dim" {
        let d = dim.ok_or_else(|| ctx.err(key, "budgets_per_dim needs the model's dim"))?;
        Ok(n * d)
    } else {
        Ok(n)
    }
}
