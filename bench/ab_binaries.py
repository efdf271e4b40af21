#!/usr/bin/env python3
"""Paired speed comparison of two `cqr` binaries (a code change: before, after) on this machine.

Usage: python3 bench/ab_binaries.py OLD NEW [--cases dense-10k,hashing-1m] [--rounds 8] [--steps 40] [--batch 2048]

Per case: one untimed run of each binary, then ROUNDS rounds alternating the order (old new,
new old, ...), each a `cqr bench --repeats 1` run. Prints every figure, then NEW/OLD as the
geometric mean of the per-round ratios with its 95% Student-t interval (on the log ratios): the
statistic `cqr bench --ab` prints for in-process comparisons. Standard library only.
"""
import argparse
import math
import statistics
import subprocess

# Two-sided 97.5% quantiles of Student's t, df 1..30.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ratio_interval(ratios):
    """Geometric mean of `ratios` and its 95% t interval."""
    logs = [math.log(r) for r in ratios]
    m = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(m), float("nan"), float("nan")
    half = T975[min(len(logs) - 1, 30) - 1] * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def samples_per_s(binary, case, steps, batch):
    cmd = [binary, "bench", "--cases", case, "--steps", str(steps), "--repeats", "1", "--batch", str(batch)]
    out = subprocess.run(cmd,
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) > 6 and cols[1] == case:
            return float(cols[6])
    raise SystemExit(f"{binary}: no row for case {case} in:\n{out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--cases", default="dense-10k,hashing-1m")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=2048, help="batch size (DLRM's protocol: 128)")
    a = p.parse_args()
    print("| case | old samples/s (median) | new samples/s (median) | new/old | 95% interval | rounds |")
    print("|---|---:|---:|---:|---:|---:|")
    for case in a.cases.split(","):
        samples_per_s(a.old, case, a.steps, a.batch)
        samples_per_s(a.new, case, a.steps, a.batch)
        old, new = [], []
        for r in range(a.rounds):
            order = [(a.old, old), (a.new, new)] if r % 2 == 0 else [(a.new, new), (a.old, old)]
            for binary, sink in order:
                sink.append(samples_per_s(binary, case, a.steps, a.batch))
        g, lo, hi = ratio_interval([n / o for o, n in zip(old, new)])
        print(f"| {case} | {statistics.median(old):.0f} | {statistics.median(new):.0f} | {g:.3f} | {lo:.3f}-{hi:.3f} | {a.rounds} |", flush=True)


if __name__ == "__main__":
    main()
