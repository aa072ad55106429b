#!/usr/bin/env bash
# Measures `syncctl assess` over a generated Active Directory export (LDIF), on this machine.
#
# Usage: bench/assess-100k.sh [COUNT]        (default 100000 objects)
#
# Generates the export once with bench/gen_bench.py (fixed seed, the SYNCBENCH AD export:
# 85% users with the AD attributes syncctl reads and about 4% of them with a defect, 10% groups,
# 5% contacts), builds
# syncctl in release mode, then runs, three times each: the terminal summary alone, and every
# output at once (--json to /dev/null, --csv, --html, --fix-ldif). Prints a Markdown table of the
# best wall-clock time and the peak RSS (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-100000}
ROOT=$(pwd)
WORK=${SYNCCTL_BENCH_DIR:-/tmp/syncctl-bench}
mkdir -p "$WORK"
command -v /usr/bin/time >/dev/null 2>&1 || { apt-get install -y --no-install-recommends time >/dev/null; }

DATA=$WORK/data-$COUNT-seed42
if [ ! -s "$DATA/manifest.json" ]; then
  echo "generating $DATA ..." >&2
  rm -rf "$DATA.tmp"
  /usr/bin/python3 bench/gen_bench.py "$COUNT" "$DATA.tmp" && mv "$DATA.tmp" "$DATA"
fi
EXPORT=$DATA/ad.ldif
cargo build --release -p syncctl >&2
BIN=$ROOT/target/release/syncctl

# best CMD... : best wall seconds and the peak RSS (MB) of that run, over three runs.
best() {
  local best_s="" best_rss="" s rss i
  for i in 1 2 3; do
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" > /dev/null 2> "$WORK/stderr" || [ $? -le 2 ]
    read -r s rss < <(tail -n 1 "$WORK/time")
    if [ -z "$best_s" ] || awk -v a="$s" -v b="$best_s" 'BEGIN { exit !(a < b) }'; then
      best_s=$s best_rss=$rss
    fi
  done
  printf '%s s | %d MB' "$best_s" "$((best_rss / 1024))"
}

summary=$(best "$BIN" assess --ldif "$EXPORT")
everything=$(best "$BIN" --json assess --ldif "$EXPORT" --csv "$WORK/assess.csv" --html "$WORK/assess.html" \
  --fix-ldif "$WORK/assess-fix.ldif")
size=$(du -m "$EXPORT" | cut -f1)
html=$(du -m "$WORK/assess.html" | cut -f1)
cat <<MD
| \`syncctl assess --ldif\`, $COUNT objects ($size MB of LDIF) | wall (best of 3) | peak RSS |
|---|---|---|
| terminal summary | $summary |
| \`--json\`, \`--csv\`, \`--html\` ($html MB), \`--fix-ldif\` | $everything |
MD
