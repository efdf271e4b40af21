//! How many cells `cqr sweep` runs at once when `--jobs` is not given.
//!
//! One cell per core: a cell at DLRM's batch 128 keeps one core busy, and its loops (products,
//! kernels, table lookups) run on its own thread while other cells run (see
//! `cqr_models::threads`). Measured
//! on a 2-core AMD EPYC (Zen 3), six 1-epoch regime cells: `--jobs 2` 36.8 s, `--jobs 1` 52.2 s,
//! the same metrics to the bit (docs/performance.md). Memory bounds it: at most one cell per
//! [`MEMORY_PER_CELL`] of the memory the kernel reports available, since a grid's cells may hold
//! large tables (the regime cells peak at ~0.6 GB; a full-Criteo dense cell at several GB: set
//! `--jobs 1` there).

/// The memory a cell is allowed when choosing the number of cells.
pub const MEMORY_PER_CELL: u64 = 4 << 30;

/// The rule: one cell per core, at most one per [`MEMORY_PER_CELL`] of available memory, at
/// least one.
pub fn jobs_for(cores: usize, available_bytes: Option<u64>) -> usize {
    let by_memory = available_bytes.map_or(usize::MAX, |b| (b / MEMORY_PER_CELL) as usize);
    cores.min(by_memory).max(1)
}

/// This machine's choice and a line saying why.
pub fn auto_jobs() -> (usize, String) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let avail = mem_available();
    let jobs = jobs_for(cores, avail);
    let mem =
        avail.map_or("unknown memory".to_string(), |b| format!("{:.1} GiB available", b as f64 / (1u64 << 30) as f64));
    (
        jobs,
        format!(
            "--jobs {jobs}: {cores} cores, {mem}, {} GiB allowed per cell (set --jobs to choose)",
            MEMORY_PER_CELL >> 30
        ),
    )
}

/// `MemAvailable` from /proc/meminfo (Linux), in bytes.
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cell_per_core_within_memory() {
        assert_eq!(jobs_for(2, Some(24 << 30)), 2);
        assert_eq!(jobs_for(16, Some(24 << 30)), 6);
        assert_eq!(jobs_for(8, Some(1 << 30)), 1, "never below one");
        assert_eq!(jobs_for(4, None), 4);
    }
}
