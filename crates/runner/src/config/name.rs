//! A cell's name, in one place: written by the grid, read by the tables, charts and reports.
//!
//! Format: `METHOD[-bBUDGET][-KEY=VALUE...][-rFRACTION]-sSEED`, e.g. `cqr-b800-lr=0.01-s3`,
//! `cqr-b800-optimizer=adam-lr=0.001-r0.333-s100` (a tuning trial's rung at a third of the
//! steps). The labels are the grid values that tell the method's cells apart (axes, options of
//! a method listed twice, `quantize=...`). A value may hold `-` (`k=-2`); a method name may too
//! (`least-squares`).
//!
//! - the *variant*: the name without the seed (cells that differ only in the seed);
//! - the *line*: the variant without the budget and the `dataset=` label (one method's cells
//!   over budgets, one line of a chart and one side of a paired comparison).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellName {
    pub method: String,
    pub budget: Option<u64>,
    /// `key=value` labels, in name order.
    pub labels: Vec<(String, String)>,
    /// A tuning rung: the fraction of the steps, as written (`0.333`).
    pub rung: Option<String>,
    pub seed: Option<u64>,
}

fn number_after(part: &str, prefix: char) -> Option<&str> {
    let rest = part.strip_prefix(prefix)?;
    (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')).then_some(rest)
}

impl CellName {
    /// Reads a name (or a variant or line: the seed and budget are optional). Never fails: a part
    /// that is none of the above joins the method (before any label) or the last label's value.
    pub fn parse(name: &str) -> CellName {
        let mut n = CellName { method: String::new(), budget: None, labels: vec![], rung: None, seed: None };
        let parts: Vec<&str> = name.split('-').collect();
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            if i == 0 {
                n.method = part.to_string();
            } else if let Some(s) = number_after(part, 's').filter(|s| i == last && !s.contains('.')) {
                n.seed = s.parse().ok();
            } else if let Some(b) =
                number_after(part, 'b').filter(|b| n.labels.is_empty() && n.budget.is_none() && !b.contains('.'))
            {
                n.budget = b.parse().ok();
            } else if let Some(r) = number_after(part, 'r').filter(|_| n.rung.is_none()) {
                n.rung = Some(r.to_string());
            } else if let Some((k, v)) = part.split_once('=') {
                n.labels.push((k.to_string(), v.to_string()));
            } else if let Some((_, v)) = n.labels.last_mut() {
                v.push('-');
                v.push_str(part);
            } else {
                n.method.push('-');
                n.method.push_str(part);
            }
        }
        n
    }

    /// The value of a label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A quantized variant (`quantize=...`).
    pub fn is_quantized(&self) -> bool {
        self.label("quantize").is_some()
    }

    /// The name without its seed.
    pub fn variant(&self) -> String {
        CellName { seed: None, ..self.clone() }.to_string()
    }

    /// The variant without the budget and the `dataset=` label.
    pub fn line(&self) -> String {
        let labels = self.labels.iter().filter(|(k, _)| k != "dataset").cloned().collect();
        CellName { budget: None, seed: None, labels, ..self.clone() }.to_string()
    }
}

impl fmt::Display for CellName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.method)?;
        if let Some(b) = self.budget {
            write!(f, "-b{b}")?;
        }
        for (k, v) in &self.labels {
            write!(f, "-{k}={v}")?;
        }
        if let Some(r) = &self.rung {
            write!(f, "-r{r}")?;
        }
        if let Some(s) = self.seed {
            write!(f, "-s{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_give_their_parts() {
        for name in [
            "cqr-b800-s3",
            "cqr-b800-optimizer=adam-lr=0.001-r0.333-s100",
            "hashing-b320-k=-2-precision=bf16-s0",
            "least-squares-s1",
            "dense-s0",
            "cqr-b4800-residual=robe-quantize=int8-s2",
        ] {
            assert_eq!(CellName::parse(name).to_string(), name);
        }
        let n = CellName::parse("cqr-b800-dataset=a-k=-2-lr=1e-3-s7");
        assert_eq!((n.method.as_str(), n.budget, n.seed), ("cqr", Some(800), Some(7)));
        assert_eq!(n.label("k"), Some("-2"));
        assert_eq!(n.variant(), "cqr-b800-dataset=a-k=-2-lr=1e-3");
        assert_eq!(n.line(), "cqr-k=-2-lr=1e-3");
        assert_eq!(CellName::parse("least-squares-s1").method, "least-squares");
        assert!(CellName::parse("dense-quantize=int8-s0").is_quantized());
        // A variant or line parses too (no seed, no budget).
        assert_eq!(CellName::parse("ce-b3200").line(), "ce");
        assert_eq!(CellName::parse("ce-b3200").seed, None);
    }
}
