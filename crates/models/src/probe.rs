//! Process and machine probes (Linux /proc): peak resident memory, the CPU model.

/// Resets the process's peak-RSS counter (Linux: `5` in /proc/self/clear_refs), so the peak
/// read after a run is that run's, not an earlier one's in the same process.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS of this process from /proc/self/status (Linux); 0 elsewhere.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The CPU as `/proc/cpuinfo` names it, with its family and model numbers (vendors reuse one
/// name across generations: "AMD EPYC" is Zen 4 at family 25 model 17, Zen 5 at family 26) and
/// whether it has AVX-512 (the GEMM kernels, and so the last digits of results, depend on it).
pub fn cpu_model() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else { return "unknown CPU".into() };
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let simd = if field("flags").is_some_and(|f| f.split_whitespace().any(|x| x == "avx512f")) {
        "AVX-512"
    } else {
        "no AVX-512"
    };
    match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!("{name} (family {f}, model {m}, {simd})"),
        _ => format!("{name} ({simd})"),
    }
}
