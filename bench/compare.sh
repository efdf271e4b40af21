#!/usr/bin/env bash
# Same-run comparison: `cqr bench` and the PyTorch scripts, alternating, REPEATS times.
# Usage: bench/compare.sh PYTHON [REPEATS] [BATCH]   (PYTHON: a venv's python with torch installed;
# BATCH: the DLRM cases' batch, default 2048; 128 is DLRM's own protocol, run for 800 steps)
# Prints every figure and the ratios cqr-bench / PyTorch per repeat, for the fused kernels (the
# default) and, in the same alternation, burn's op graph (CQR_KERNELS=burn). Not part of CI.
set -euo pipefail
py="${1:?usage: bench/compare.sh PYTHON [REPEATS] [BATCH]}"
reps="${2:-3}"
batch="${3:-2048}"
# The same number of samples per run at any batch: 50 steps at 2048, 800 at 128.
steps=$(( 102400 / batch > 50 ? 102400 / batch : 50 ))
cd "$(dirname "$0")/.."
cargo build --release --quiet
cqr="${CARGO_TARGET_DIR:-target}/release/cqr"
cpu() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2 | xargs; }
simd=$(grep -qw avx512f /proc/cpuinfo && echo AVX-512 || echo "no AVX-512")
echo "# batch $batch, $steps steps; $(date -u +%Y-%m-%dT%H:%MZ), $(cpu 'model name') (family $(cpu 'cpu family'), model $(cpu 'model[[:space:]]*:'), $simd), $(nproc) cores"
sps() { awk '/samples\/s/ {for (i = 1; i <= NF; i++) if ($i == "samples/s") print $(i + 1)}'; }
ours() { CQR_KERNELS="$2" "$cqr" bench --steps "${3:-$steps}" --batch "${4:-$batch}" --repeats 1 --cases "$1" | awk -F'|' -v c="$1" '$2 ~ " "c" " {gsub(/ /, "", $7); print $7}'; }
x() { echo "scale=2; $1 / $2" | bc; }
# Per-repeat ratios (unrounded) for the summary: the geometric mean with a 95% t interval.
declare -A ratios
keep() { ratios[$1]+="$(echo "scale=6; $2 / $3" | bc) "; }
for r in $(seq 1 "$reps"); do
  a=$(ours dense-10k fused); a0=$(ours dense-10k burn); b=$("$py" bench/pytorch_dlrm.py --steps "$steps" --batch "$batch" --rows 10000 --variant dense | sps)
  c=$(ours dense-1m fused);  c0=$(ours dense-1m burn);  d=$("$py" bench/pytorch_dlrm.py --steps "$steps" --batch "$batch" --rows 1000000 --variant sparse | sps)
  e=$(ours gmf-ml1m fused 50 2048);  f=$("$py" bench/pytorch_gmf.py --steps 500 | sps)
  echo "repeat $r: 26x10k dense: cqr $a (burn graph $a0) vs torch (Adam) $b = $(x "$a" "$b")x ($(x "$a0" "$b")x);" \
       "26x1M sparse: cqr $c (burn graph $c0) vs torch (SparseAdam) $d = $(x "$c" "$d")x ($(x "$c0" "$d")x);" \
       "GMF ML-1M: cqr $e vs torch $f = $(x "$e" "$f")x"
  keep "26x10k dense, fused / torch" "$a" "$b"; keep "26x10k dense, burn graph / torch" "$a0" "$b"
  keep "26x1M sparse, fused / torch" "$c" "$d"; keep "26x1M sparse, burn graph / torch" "$c0" "$d"
  keep "GMF ML-1M, cqr / torch" "$e" "$f"
done
echo "summary over $reps repeats: geometric mean of the per-repeat ratios [95% t interval]"
for k in "26x10k dense, fused / torch" "26x10k dense, burn graph / torch" "26x1M sparse, fused / torch" "26x1M sparse, burn graph / torch" "GMF ML-1M, cqr / torch"; do
  python3 -c 'import sys; sys.path.insert(0, "bench"); from ab_binaries import ratio_interval
g, lo, hi = ratio_interval([float(v) for v in sys.argv[2:]]); print(f"  {sys.argv[1]}: {g:.2f}x [{lo:.2f}, {hi:.2f}]")' "$k" ${ratios[$k]}
done
