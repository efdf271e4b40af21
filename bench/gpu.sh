#!/usr/bin/env bash
# The GPU figures (issue 20, item 6) in one call, on a machine with a GPU. Nothing here builds:
# the binary comes prebuilt (the GPU machine has no registry access and little time).
#
#   here:             just gpu-build          # target-gpu/cqr: release, --features wgpu, stripped
#   on the GPU box:   bash bench/gpu.sh OUT   # from the repository root; OUT gets every output
#
# With the project's device tool: run `bash bench/gpu.sh "$OUT"` with carry
# ["target-gpu/cqr.gz", "target-gpu/lib"]: the stripped binary is ~109 MB, over the 64 MiB that
# travel, gzipped ~26 MB (measured 2026-12-04); this script unpacks it. GPU_STEPS (default 50)
# sets the bench's steps (a quick local run on a software Vulkan driver: GPU_STEPS=2).
# It records the GPU and CPU, `cqr bench --backend wgpu` on four cases (and flex beside it on the
# same machine), and one training cell of the quick grid on wgpu, with samples/s, into OUT.
set -euo pipefail
OUT=${1:-${OUT:-/tmp/cqr-gpu}}
BIN=${CQR_GPU_BIN:-target-gpu/cqr}
STEPS=${GPU_STEPS:-50}
mkdir -p "$OUT"
if [ ! -x "$BIN" ] && [ -f target-gpu/cqr.gz ]; then
  BIN="$(mktemp -d)/cqr"
  gunzip -c target-gpu/cqr.gz > "$BIN" && chmod +x "$BIN"
fi
[ -x "$BIN" ] || { echo "gpu.sh: $BIN is missing: run \`just gpu-build\` first (and carry target-gpu/cqr.gz)" >&2; exit 2; }
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: not found"
  lscpu | grep -E 'Model name|^CPU\(s\)' || true
} | tee "$OUT/machine.txt"
# wgpu needs a Vulkan loader (libvulkan.so.1) and the driver's ICD; use a carried loader when the
# system has none.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
  export LD_LIBRARY_PATH="$PWD/target-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using the carried Vulkan loader in target-gpu/lib" | tee -a "$OUT/machine.txt"
fi
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | tee -a "$OUT/machine.txt" || true
status=0
# 1. Throughput, wgpu then flex (same machine, same binary). 50 steps at batch 2048: a GPU step
#    is short, and 20 steps would time mostly the warm-up.
timeout 300 "$BIN" bench --backend wgpu --cases dense-10k,hashing,cqr,hashing-1m --steps "$STEPS" --repeats 3 2>&1 | tee "$OUT/bench-wgpu.md" || status=$?
timeout 120 "$BIN" bench --backend flex --cases dense-10k,hashing --steps "$STEPS" --repeats 3 2>&1 | tee "$OUT/bench-flex.md" || true
# 2. One training cell of the quick grid (planted Criteo, DLRM small, the first cell) on wgpu.
sed 's/^  epochs: 3$/  epochs: 3\n  backend: wgpu/' experiments/quick.yaml > "$OUT/quick-wgpu.yaml"
grep -q 'backend: wgpu' "$OUT/quick-wgpu.yaml" || { echo "gpu.sh: could not set backend: wgpu in the quick grid" >&2; exit 2; }
timeout 240 "$BIN" sweep "$OUT/quick-wgpu.yaml" --max-cells 1 --results "$OUT/cell" 2>&1 | tee "$OUT/cell.log" || status=$?
find "$OUT/cell" -name record.json -exec cp {} "$OUT/cell-record.json" \; 2>/dev/null || true
exit $status
