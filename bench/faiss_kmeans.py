#!/usr/bin/env python3
"""Same-run reference for `cargo bench -p cqr-methods --bench kmeans`: faiss k-means, CPU.

200,000 uniform(-1, 1) vectors of dim 4 into 1,000 centroids, 25 iterations, random init, no
subsampling (max_points_per_centroid large), as the criterion benchmark. Best of --reps runs.
Install: python3 -m venv DIR && DIR/bin/pip install faiss-cpu numpy   (outside the repository)
"""
import argparse
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=4)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        faiss.omp_set_num_threads(a.threads)
    x = np.random.default_rng(0).uniform(-1, 1, (a.n, a.dim)).astype("float32")
    best = float("inf")
    for r in range(a.reps):
        km = faiss.Kmeans(a.dim, a.k, niter=a.iters, seed=r + 1, max_points_per_centroid=10**9, min_points_per_centroid=1)
        t0 = time.perf_counter()
        km.train(x)
        best = min(best, time.perf_counter() - t0)
    print(f"faiss {faiss.__version__}: {a.n}x{a.dim} -> {a.k}, {a.iters} iterations: {best:.3f} s (best of {a.reps})")


if __name__ == "__main__":
    main()
