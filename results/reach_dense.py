#!/usr/bin/env python3
"""Parameters at which each method reaches the dense tables' test BCE, from a summary.csv.

Usage: python3 results/reach_dense.py results/<experiment>/summary.csv [DATASET|-] [METRIC]

Per method, the smallest per-table cap whose mean METRIC over seeds (default test_bce) is within
one dense seed standard deviation of the dense mean or better ("reaches dense"; for a metric
with "auc" in its name higher is better), with the embedding parameters it trains
(`train_params`, mean over seeds) and keeps (`params`). "not reached" when no cap does.
Standard library only.
"""
import collections
import re
import csv
import statistics as st
import sys


def main():
    path = sys.argv[1]
    rows = list(csv.DictReader(open(path)))
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        rows = [r for r in rows if r["dataset"] == sys.argv[2]]
    metric = sys.argv[3] if len(sys.argv) > 3 else "test_bce"
    sign = -1.0 if "auc" in metric else 1.0
    by = collections.defaultdict(list)
    for r in rows:
        # The variant without its budget: methods listed twice with different options
        # (e.g. cqr and cqr residual=robe) stay apart.
        key = re.sub(r"-b\d+", "", r.get("variant") or r["method"])
        by[(key if r["method"] != "dense" else "dense", int(r["budget"]))].append(r)
    dense = [float(r[metric]) for r in by.get(("dense", 0), [])]
    if not dense:
        sys.exit(f"{path}: no dense cells")
    mean = st.mean(dense)
    sd = st.stdev(dense) if len(dense) > 1 else 0.0
    print(f"dense: {metric} {mean:.5f} ± {sd:.5f} ({len(dense)} seeds), {st.mean(float(r['params']) for r in by[('dense', 0)]):.0f} parameters")
    print(f"| method | reaches dense at cap | parameters kept | parameters trained | {metric} there |")
    print("|---|---:|---:|---:|---:|")
    methods = sorted({m for (m, b) in by if m != "dense"})
    for m in methods:
        caps = sorted(b for (mm, b) in by if mm == m)
        hit = None
        for b in caps:
            v = [float(r[metric]) for r in by[(m, b)]]
            if sign * st.mean(v) <= sign * mean + sd:
                hit = (b, by[(m, b)], st.mean(v))
                break
        if hit:
            b, rs, v = hit
            kept = st.mean(float(r["params"]) for r in rs)
            trained = st.mean(float(r["train_params"]) for r in rs)
            print(f"| {m} | {b} | {kept:.0f} | {trained:.0f} | {v:.5f} |")
        else:
            print(f"| {m} | not reached (caps {caps[0]}-{caps[-1]}) | | | |")


if __name__ == "__main__":
    main()
