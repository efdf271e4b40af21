#!/usr/bin/env python3
"""Same-run reference for `cqr bench`: the DLRM of cqr-bench in PyTorch, CPU.

Model (as crates/models/src/net.rs): 26 embedding tables x dim 16; bottom MLP 13-512-256-64-16
(ReLU after every layer); pairwise dot products of the 27 vectors (strict lower triangle)
concatenated with the bottom output; top MLP 367-512-256-1 (ReLU between layers); mean BCE with
logits. Batch 2048, random data, warm-up steps, then timed steps.

Variants:
  --variant dense   nn.Embedding tables (dense gradients) + one torch.optim.Adam over everything
  --variant sparse  nn.Embedding(sparse=True) + SparseAdam for tables, Adam for the MLPs
                    (what cqr-bench does: lazy Adam on touched rows)

Prints one line: `samples/s <value> peak_rss_mb <value>`.
Install: python3 -m venv DIR && DIR/bin/pip install torch   (outside the repository)
"""
import argparse

import torch
from torch import nn

from timing import report_steps


class Dlrm(nn.Module):
    def __init__(self, n_tables, rows, dim, sparse):
        super().__init__()
        self.emb = nn.ModuleList(nn.Embedding(rows, dim, sparse=sparse) for _ in range(n_tables))
        for e in self.emb:
            nn.init.uniform_(e.weight, -0.05, 0.05)
        bottom = [13, 512, 256, 64, dim]
        layers = []
        for i, o in zip(bottom, bottom[1:]):
            layers += [nn.Linear(i, o), nn.ReLU()]
        self.bottom = nn.Sequential(*layers)
        f = n_tables + 1
        self.register_buffer("li", torch.tril_indices(f, f, offset=-1)[0])
        self.register_buffer("lj", torch.tril_indices(f, f, offset=-1)[1])
        top = [dim + f * (f - 1) // 2, 512, 256, 1]
        layers = []
        for k, (i, o) in enumerate(zip(top, top[1:])):
            layers.append(nn.Linear(i, o))
            if k + 2 < len(top):
                layers.append(nn.ReLU())
        self.top = nn.Sequential(*layers)

    def forward(self, dense, cats):
        x = self.bottom(dense)
        vecs = torch.stack([x] + [e(cats[:, t]) for t, e in enumerate(self.emb)], dim=1)
        gram = torch.bmm(vecs, vecs.transpose(1, 2))
        inter = gram[:, self.li, self.lj]
        return self.top(torch.cat([x, inter], dim=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--tables", type=int, default=26)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variant", choices=["dense", "sparse"], default="dense")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sparse = a.variant == "sparse"
    model = Dlrm(a.tables, a.rows, a.dim, sparse)
    emb_params = list(model.emb.parameters())
    mlp_params = list(model.bottom.parameters()) + list(model.top.parameters())
    if sparse:
        opts = [torch.optim.SparseAdam(emb_params, lr=1e-3), torch.optim.Adam(mlp_params, lr=1e-3)]
    else:
        opts = [torch.optim.Adam(emb_params + mlp_params, lr=1e-3)]
    n = a.batch * (a.steps + a.warmup)
    dense = torch.rand(n, 13) * 5.0
    cats = torch.randint(0, a.rows, (n, a.tables))
    labels = (torch.arange(n) % 4 == 0).float().unsqueeze(1)
    loss_fn = nn.BCEWithLogitsLoss()

    def step(i):
        s = slice(i * a.batch, (i + 1) * a.batch)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss = loss_fn(model(dense[s], cats[s]), labels[s])
        loss.backward()
        for o in opts:
            o.step()

    report_steps(step, a.warmup, a.steps, a.batch)


if __name__ == "__main__":
    main()
