#!/usr/bin/env python3
"""Load a `cqr export` directory with numpy and recompute its test BCE.

    python3 tools/load_export.py DIR [--tolerance 1e-5]

Reads manifest.json, model.safetensors and test.safetensors (the safetensors format is parsed
here, so numpy is the only dependency; `safetensors.numpy.load_file` reads the same files), runs
every table's lookup program and the backbone (DLRM or GMF) in float32, and compares the mean
test BCE with the manifest's `expected.test_bce`. Exit status 1 when the difference exceeds the
tolerance. (torch users: `safetensors.torch.load_file` reads the same arrays; the program below
ports line by line.)

Use it as a template for serving: `embed(table, ids, arrays)` is the whole lookup of any
exported method, `forward(...)` the whole model.
"""
import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

P = (1 << 61) - 1  # the universal hash's prime
DTYPES = {"F32": np.float32, "U32": np.uint32, "U8": np.uint8}


def read_safetensors(path):
    """{name: array} of a safetensors file."""
    buf = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        start, end = v["data_offsets"]
        data = np.frombuffer(buf[8 + n + start : 8 + n + end], dtype=DTYPES[v["dtype"]])
        out[name] = data.reshape(v["shape"])
    return out


def rows(index, ids, arrays):
    """Row of each id for one term (see crates/methods/src/export.rs)."""
    kind = index["kind"]
    if kind == "identity":
        return ids.astype(np.int64)
    if kind == "quotient":
        return ids.astype(np.int64) // index["m"]
    if kind == "remainder":
        return ids.astype(np.int64) % index["m"]
    if kind == "pointer":
        return arrays[index["array"]][ids.astype(np.int64), index["column"]].astype(np.int64)
    if kind == "hash":
        a, b, m = index["a"], index["b"], index["m"]
        uniq, inverse = np.unique(ids, return_inverse=True)  # Python ints: a * id needs 93 bits
        hashed = np.array([((a * int(x) + b) % P) % m for x in uniq], dtype=np.int64)
        return hashed[inverse]
    raise ValueError(f"unknown index kind {kind!r}")


def embed(table, ids, arrays):
    """[n, dim] vectors of `ids` in one exported table."""
    parts = []
    for part in table["parts"]:
        acc = None
        for term in part["terms"]:
            r = arrays[term["array"]][rows(term["index"], ids, arrays)]
            if acc is None:
                acc = r.copy()
            elif part["combine"] == "sum":
                acc += r
            else:
                acc *= r
        parts.append(acc)
    return np.concatenate(parts, axis=1)


def mlp(x, spec, arrays):
    layers = spec["layers"]
    for k, name in enumerate(layers):
        x = x @ arrays[name + ".weight"] + arrays[name + ".bias"]
        if k + 1 < len(layers) or spec["relu_last"]:
            x = np.maximum(x, 0)
    return x


def forward(model, arrays, dense, embs):
    """Logits [n] of the backbone from its dense features and the tables' vectors."""
    if model["kind"] == "gmf":
        return (embs[0] * embs[1]).sum(1)
    if model["kind"] != "dlrm":
        raise ValueError(f"unknown backbone {model['kind']!r}")
    x = mlp(dense, model["bottom"], arrays) if model["bottom"] else None
    vectors = np.stack(([x] if x is not None else []) + embs, 1)  # [n, f, dim]
    gram = vectors @ vectors.transpose(0, 2, 1)  # [n, f, f]
    f = vectors.shape[1]
    i, j = zip(*[(i, j) for i in range(f) for j in range(i)])  # strict lower triangle, row by row
    inter = gram[:, list(i), list(j)]
    top_in = inter if x is None else np.concatenate([x, inter], 1)
    return mlp(top_in, model["top"], arrays)[:, 0]


def bce(logits, labels):
    z = logits.astype(np.float64)
    y = labels.astype(np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--tolerance", type=float, default=1e-5)
    args = ap.parse_args()
    manifest = json.loads((args.dir / "manifest.json").read_text())
    arrays = read_safetensors(args.dir / manifest["arrays"])
    test = read_safetensors(args.dir / manifest["test"])
    cats, labels = test["cats"], test["labels"]
    dense = test.get("dense")
    embs = [embed(t, cats[:, i], arrays) for i, t in enumerate(manifest["tables"])]
    logits = forward(manifest["model"], arrays, dense, embs)
    got, want = bce(logits, labels), manifest["expected"]["test_bce"]
    print(f"{manifest['cell']['name']}: {len(labels)} test rows, {len(manifest['tables'])} tables "
          f"({', '.join(sorted({t['method'] for t in manifest['tables']}))})")
    print(f"test BCE numpy {got:.9f}, cqr {want:.9f}, difference {abs(got - want):.2e}")
    ok = abs(got - want) <= args.tolerance
    if not ok:
        print(f"FAIL: beyond the tolerance {args.tolerance:g}")
        sys.exit(1)
    print(f"ok: within {args.tolerance:g}")


if __name__ == "__main__":
    main()
