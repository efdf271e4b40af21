//! `cqr slurm`: a grid on a Slurm cluster. The printed script submits an sbatch job array, one
//! task a shard (`cqr sweep FILE --shard $SLURM_ARRAY_TASK_ID/N`, every task into the same results
//! directory), and a job that depends on the whole array and rebuilds the tables, charts and
//! report from the finished cells (`--max-cells 0`, `plot`, `report`).
//!
//! Why this is safe: a cell's record is written into a hidden directory and renamed into place, so
//! two shards never leave a half-written cell; the shards split the cells by position
//! (`index % N`), so each cell runs in exactly one task; the table job takes the results lock.
//! The final job runs `afterany`: a failed shard's cells are left for a re-submission, which
//! resumes them (finished cells are skipped).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// What the script needs to know.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The experiment file, as the cluster's jobs will see it.
    pub file: PathBuf,
    /// The experiment's name (the job name).
    pub name: String,
    /// The shared results directory.
    pub results: PathBuf,
    /// Array tasks (shards).
    pub shards: usize,
    /// Wall-clock limit of one task as the user gave it: hours (`4`, `1.5`), `HH:MM:SS` or
    /// `D-HH:MM:SS` (see [`sbatch_time`]).
    pub time: String,
    /// CPUs of one task; also its `--jobs` (cells at once).
    pub cpus: usize,
    /// Memory of one task, as sbatch takes it (`16G`).
    pub mem: String,
    /// The `cqr` binary the jobs run.
    pub cqr: PathBuf,
    /// The directory the jobs run in (relative paths are resolved against it).
    pub workdir: PathBuf,
}

impl SlurmOptions {
    fn check(&self) -> Result<()> {
        if self.shards == 0 {
            bail!("--shards must be at least 1");
        }
        if self.cpus == 0 {
            bail!("--cpus must be at least 1");
        }
        sbatch_time(&self.time)?;
        if self.mem.is_empty() || !self.mem.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("--mem `{}`: expected a size such as 16G", self.mem);
        }
        Ok(())
    }
}

/// `--time` in a form sbatch cannot misread: `HH:MM:SS`, or `D-HH:MM:SS` from a day on. Input:
/// a number of hours (`4`, `1.5`), `HH:MM:SS` or `D-HH:MM:SS`. `MM:SS` forms (`04:00`, sbatch's
/// reading: four *minutes*) and bare `D-HH` are refused as ambiguous.
pub fn sbatch_time(t: &str) -> Result<String> {
    let t = t.trim();
    let bad = |why: &str| anyhow::anyhow!("--time `{t}`: {why}; give hours (`4`, `1.5`), HH:MM:SS or D-HH:MM:SS");
    let seconds: u64 = if let Ok(h) = t.parse::<f64>() {
        if !(h.is_finite() && h > 0.0 && h <= 365.0 * 24.0) {
            return Err(bad("hours must be a positive number"));
        }
        (h * 3600.0).round() as u64
    } else {
        let (days, rest) = match t.split_once('-') {
            Some((d, r)) => (d.parse::<u64>().map_err(|_| bad("days before `-` must be a whole number"))?, r),
            None => (0, t),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 3 {
            return Err(bad("sbatch reads `MM:SS` and `HH:MM` ambiguously (`04:00` is four minutes)"));
        }
        let n: Vec<u64> = parts
            .iter()
            .map(|p| p.parse::<u64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("not whole numbers"))?;
        if n[1] >= 60 || n[2] >= 60 {
            return Err(bad("minutes and seconds must be below 60"));
        }
        days * 86_400 + n[0] * 3600 + n[1] * 60 + n[2]
    };
    if seconds == 0 {
        return Err(bad("the limit must be positive"));
    }
    let (d, r) = (seconds / 86_400, seconds % 86_400);
    let hms = format!("{:02}:{:02}:{:02}", r / 3600, r % 3600 / 60, r % 60);
    Ok(if d > 0 { format!("{d}-{hms}") } else { hms })
}

/// A word for the shell: kept as it is when it holds only safe characters, else single-quoted.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn word(p: &Path) -> String {
    shell_word(&p.to_string_lossy())
}

/// The command line of array task `$SLURM_ARRAY_TASK_ID` (one line of the script).
pub fn shard_command(o: &SlurmOptions) -> String {
    format!(
        "{} sweep {} --results {} --jobs {} --shard \"$SLURM_ARRAY_TASK_ID/{}\"",
        word(&o.cqr),
        word(&o.file),
        word(&o.results),
        o.cpus,
        o.shards
    )
}

/// The commands of the job that runs after every shard.
pub fn table_commands(o: &SlurmOptions) -> Vec<String> {
    vec![
        format!("{} sweep {} --results {} --max-cells 0", word(&o.cqr), word(&o.file), word(&o.results)),
        format!("{} plot {}", word(&o.cqr), word(&o.results)),
        format!("{} report {}", word(&o.cqr), word(&o.results)),
    ]
}

/// The whole script: run it on the cluster's login node (`bash script.sh`).
pub fn script(o: &SlurmOptions) -> Result<String> {
    o.check()?;
    let logs = o.results.join("slurm");
    let job = shell_word(&format!("cqr-{}", o.name));
    let mut s = String::new();
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(
        s,
        "# Generated by `cqr slurm {} --shards {}`: submits {} array tasks (one shard each) and a",
        o.file.display(),
        o.shards,
        o.shards
    );
    let _ = writeln!(s, "# job that rebuilds the tables, charts and report once every task has ended.");
    let _ = writeln!(s, "# Re-submitting resumes: finished cells are skipped.");
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "cd {}", word(&o.workdir));
    let _ = writeln!(s, "mkdir -p {}", word(&logs));
    let _ = writeln!(s, "array=$(sbatch --parsable <<'CQR_SHARD'");
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(s, "#SBATCH --job-name={job}");
    let _ = writeln!(s, "#SBATCH --array=0-{}", o.shards - 1);
    let _ = writeln!(s, "#SBATCH --time={}", sbatch_time(&o.time)?);
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", o.cpus);
    let _ = writeln!(s, "#SBATCH --mem={}", o.mem);
    let _ = writeln!(s, "#SBATCH --output={}", word(&logs.join("%x-%A_%a.out")));
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "cd {}", word(&o.workdir));
    let _ = writeln!(s, "{}", shard_command(o));
    let _ = writeln!(s, "CQR_SHARD");
    let _ = writeln!(s, ")");
    let _ = writeln!(s, "array=${{array%%;*}}");
    let _ = writeln!(s, "sbatch --dependency=afterany:\"$array\" <<'CQR_TABLES'");
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(s, "#SBATCH --job-name={job}-tables");
    let _ = writeln!(s, "#SBATCH --time=01:00:00");
    let _ = writeln!(s, "#SBATCH --cpus-per-task=1");
    let _ = writeln!(s, "#SBATCH --mem=8G");
    let _ = writeln!(s, "#SBATCH --output={}", word(&logs.join("%x-%j.out")));
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "cd {}", word(&o.workdir));
    for c in table_commands(o) {
        let _ = writeln!(s, "{c}");
    }
    let _ = writeln!(s, "CQR_TABLES");
    let _ = writeln!(s, "echo \"submitted array job $array ({} tasks) and its table job\"", o.shards);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SlurmOptions {
        SlurmOptions {
            file: "experiments/quick.yaml".into(),
            name: "quick".into(),
            results: "results/quick".into(),
            shards: 8,
            time: "4".into(),
            cpus: 4,
            mem: "16G".into(),
            cqr: "/opt/cqr/bin/cqr".into(),
            workdir: "/home/me/cqr bench".into(),
        }
    }

    #[test]
    fn the_script_submits_an_array_and_a_dependent_table_job() {
        let s = script(&opts()).unwrap();
        for want in [
            "#SBATCH --array=0-7",
            "#SBATCH --time=04:00:00\n",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --mem=16G",
            "/opt/cqr/bin/cqr sweep experiments/quick.yaml --results results/quick --jobs 4 --shard \"$SLURM_ARRAY_TASK_ID/8\"",
            "sbatch --dependency=afterany:\"$array\"",
            "/opt/cqr/bin/cqr sweep experiments/quick.yaml --results results/quick --max-cells 0",
            "/opt/cqr/bin/cqr plot results/quick",
            "/opt/cqr/bin/cqr report results/quick",
            "cd '/home/me/cqr bench'",
        ] {
            assert!(s.contains(want), "missing `{want}` in:\n{s}");
        }
        // The heredocs are quoted: $SLURM_ARRAY_TASK_ID reaches the job unexpanded.
        assert!(s.contains("<<'CQR_SHARD'") && s.contains("<<'CQR_TABLES'"));
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(script(&SlurmOptions { shards: 0, ..opts() }).is_err());
        assert!(script(&SlurmOptions { time: "4 hours".into(), ..opts() }).unwrap_err().to_string().contains("--time"));
        assert!(script(&SlurmOptions { mem: "16 G".into(), ..opts() }).unwrap_err().to_string().contains("--mem"));
        assert_eq!(shell_word("a b'c"), r"'a b'\''c'");
    }

    /// Hours become HH:MM:SS; full forms are kept (normalised); `MM:SS`-like forms are refused.
    #[test]
    fn time_is_emitted_unambiguously() {
        for (given, emitted) in [
            ("4", "04:00:00"),
            ("24", "1-00:00:00"),
            ("1.5", "01:30:00"),
            ("02:30:00", "02:30:00"),
            ("1-12:00:00", "1-12:00:00"),
            ("36:00:00", "1-12:00:00"),
        ] {
            assert_eq!(sbatch_time(given).unwrap(), emitted, "{given}");
            let s = script(&SlurmOptions { time: given.into(), ..opts() }).unwrap();
            assert!(s.contains(&format!("#SBATCH --time={emitted}\n")), "{given}: {s}");
        }
        for bad in ["04:00", "24:00", "1-12", "0", "-3", "4h", "01:60:00", ""] {
            let e = sbatch_time(bad).unwrap_err().to_string();
            assert!(e.contains("--time") && e.contains("HH:MM:SS"), "{bad}: {e}");
        }
    }
}
