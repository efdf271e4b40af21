#!/usr/bin/env python3
"""Lists crates whose features differ between the binary's build and the test build.

`cargo run --release` resolves features without dev-dependencies, `cargo test --release --workspace`
with them; any crate printed here is compiled twice. Empty output means one shared build.
Exit status 1 when a difference is found."""
import re, subprocess, sys

def features(edges):
    out = subprocess.run(["cargo", "tree", "-e", edges, "--workspace", "-f", "{p} [{f}]", "--prefix", "none"],
                         check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"(\S+) (v\S+) \[(.*?)\]", line)
        if m:
            found.setdefault((m[1], m[2]), set()).update(f for f in m[3].split(",") if f)
    return found

run, test = features("normal,build"), features("normal,build,dev")
diff = [(k, sorted(test[k] - run[k])) for k in run if run[k] != test.get(k)]
for (name, ver), extra in diff:
    print(f"{name} {ver}: the test build adds {extra}")
sys.exit(1 if diff else 0)
