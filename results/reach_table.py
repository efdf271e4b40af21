#!/usr/bin/env python3
"""Every method's parameters to reach the dense test BCE, one column per dataset (RESULTS.md).

Usage: python3 results/reach_table.py LABEL=summary.csv[+summary.csv[#OLD=NEW]...] ...

Per dataset (several summaries joined with "+" are read as one, e.g. a grid and its baselines
grid on the same data), per method variant: the smallest per-table cap whose mean test BCE over
seeds is within one dense seed std of the dense mean or better, as "cap (parameters kept;
MB)" (MB: the final `total_bytes` of all tables: weights, their optimizer state and index arrays), with "full-table training"
marked † (PQ, RQ, PEP: `train_total_bytes` is the full table);
"not reached (≤ largest cap)" otherwise; "-" where the method was not run. Same rule as
reach_dense.py. `#OLD=NEW` renames a method of one summary (a grid that lists a method once
with options that another grid's variant names do not show, e.g. criteo-scale-baselines'
`cqr#cqr=cqr-residual=robe`). Standard library only.
"""
import collections
import csv
import re
import statistics as st
import sys

# Methods whose training memory is the full table (cqr_methods::registry::trains_full_table).
FULL_TABLE = {"pq", "rq", "pep"}


def reach(rows, metric="test_bce"):
    by = collections.defaultdict(list)
    for r in rows:
        key = "dense" if r["method"] == "dense" else re.sub(r"-b\d+", "", r.get("variant") or r["method"])
        by[(key, int(r["budget"]))].append(r)
    dense = [float(r[metric]) for r in by.get(("dense", 0), [])]
    mean = st.mean(dense)
    sd = st.stdev(dense) if len(dense) > 1 else 0.0
    out = {}
    for m in sorted({m for (m, _) in by if m != "dense"}):
        caps = sorted(b for (mm, b) in by if mm == m)
        out[m] = f"not reached (≤ {caps[-1]:,})"
        for b in caps:
            if st.mean(float(r[metric]) for r in by[(m, b)]) <= mean + sd:
                kept = st.mean(float(r["params"]) for r in by[(m, b)])
                mb = st.mean(float(r["total_bytes"]) for r in by[(m, b)]) / 1e6
                full = " †" if m.split("-")[0] in FULL_TABLE else ""
                out[m] = f"{b:,} ({kept:,.0f}; {mb:.3g} MB){full}"
                break
    return out, (mean, sd, len(dense))


def main():
    cols = []
    for arg in sys.argv[1:]:
        label, paths = arg.split("=", 1)
        rows = []
        for p in paths.split("+"):
            p, _, rename = p.partition("#")
            old, _, new = rename.partition("=")
            for r in csv.DictReader(open(p)):
                if rename and r["method"] == old:
                    r["variant"] = new
                rows.append(r)
        cols.append((label, *reach(rows)))
    methods = sorted({m for _, res, _ in cols for m in res})
    print("| method | " + " | ".join(label for label, _, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    print("| dense test BCE (seeds) | " + " | ".join(f"{m:.5f} ± {s:.5f} ({n})" for _, _, (m, s, n) in cols) + " |")
    for m in methods:
        print(f"| {m} | " + " | ".join(res.get(m, "-") for _, res, _ in cols) + " |")


if __name__ == "__main__":
    main()
