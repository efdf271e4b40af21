"""The timed loop shared by the PyTorch comparison scripts: warm-up steps, then timed steps,
then one line `samples/s <value> peak_rss_mb <value> threads <value>` (what bench/compare.sh reads)."""
import resource
import time

import torch


def report_steps(step, warmup, steps, batch):
    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"samples/s {batch * steps / dt:.0f} peak_rss_mb {rss:.0f} threads {torch.get_num_threads()}")
