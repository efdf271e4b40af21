//! Where each key of an experiment file was written: a line index of block-style YAML, so that
//! every error names the file, the key path and the line.

use std::collections::HashMap;
use std::path::Path;

use anyhow::anyhow;

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
                if !key.is_empty()
                    && !key.contains(['{', '[', '"', '\'', ' '])
                    && (after.is_empty() || after.starts_with(' '))
                {
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

pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a Path,
    pub(crate) index: HashMap<String, usize>,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, path: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        match line_of(&self.index, path) {
            Some(l) => anyhow!("{}:{l}: `{path}`: {msg}", self.file.display()),
            None => anyhow!("{}: `{path}`: {msg}", self.file.display()),
        }
    }
}

/// Where a path of the resolved cell was written in the file: a method's own entry, its
/// overrides, or the shared sections.
pub(crate) fn file_path_for(cell_path: &str, method_index: Option<usize>, index: &HashMap<String, usize>) -> String {
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
