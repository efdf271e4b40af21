#!/usr/bin/env bash
# Wall time of a whole grid under two `cqr` binaries, alternating, on this machine (issue 34).
# Usage: bash bench/ab_grid.sh OLD_CQR NEW_CQR [ROUNDS] [GRID] [JOBS]
#   GRID defaults to experiments/speed-grid.yaml, JOBS to 2, ROUNDS to 2. Each round runs both
#   binaries (order alternating) into fresh result folders with one shared data cache (built by an
#   untimed first run), prints the seconds, and checks that both summaries give the same metrics.
set -euo pipefail
old=$1; new=$2; rounds=${3:-2}; grid=${4:-experiments/speed-grid.yaml}; jobs=${5:-2}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cache="$work/cache"
run() { # binary tag -> seconds
  local dir="$work/$2-$RANDOM"
  local t0; t0=$(date +%s.%N)
  "$1" sweep "$grid" --results "$dir" --cache "$cache" --jobs "$jobs" > "$dir.log" 2>&1
  echo "$(date +%s.%N) - $t0" | bc
  cp "$dir/summary.csv" "$work/$2.csv"
}
run "$old" warmup > /dev/null
metrics() { python3 -c "
import csv,sys
rows=sorted(csv.DictReader(open(sys.argv[1])),key=lambda r:r['cell_id'])
print([(r['cell_id'],r['test_bce'],r['val_auc']) for r in rows])" "$1"; }
lscpu | grep -m1 "Model name"
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then a=$(run "$old" old); b=$(run "$new" new); else b=$(run "$new" new); a=$(run "$old" old); fi
  same=$([ "$(metrics "$work/old.csv")" == "$(metrics "$work/new.csv")" ] && echo identical || echo DIFFERENT)
  echo "round $r: old ${a}s new ${b}s new/old $(echo "scale=3; $b / $a" | bc) metrics $same"
done
