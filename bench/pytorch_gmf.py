#!/usr/bin/env python3
"""Same-run reference for `cqr bench --cases gmf-ml1m`: GMF (logit = <user, item>) in PyTorch, CPU.

MovieLens-1M's shape: 6,040 users, 3,706 items, dim 32, batch 2048, random pairs; embedding
tables with sparse gradients + SparseAdam (lazy Adam, as cqr-bench), mean BCE with logits.
Prints one line: `samples/s <value> peak_rss_mb <value>`.
"""
import argparse

import torch
from torch import nn

from timing import report_steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--items", type=int, default=3706)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    u = nn.Embedding(a.users, a.dim, sparse=True)
    v = nn.Embedding(a.items, a.dim, sparse=True)
    for e in (u, v):
        nn.init.uniform_(e.weight, -0.05, 0.05)
    opt = torch.optim.SparseAdam(list(u.parameters()) + list(v.parameters()), lr=1e-3)
    n = a.batch * (a.steps + a.warmup)
    users = torch.randint(0, a.users, (n,))
    items = torch.randint(0, a.items, (n,))
    labels = (torch.arange(n) % 2 == 0).float()
    loss_fn = nn.BCEWithLogitsLoss()

    def step(i):
        s = slice(i * a.batch, (i + 1) * a.batch)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn((u(users[s]) * v(items[s])).sum(1), labels[s])
        loss.backward()
        opt.step()

    report_steps(step, a.warmup, a.steps, a.batch)


if __name__ == "__main__":
    main()
