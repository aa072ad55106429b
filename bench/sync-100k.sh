#!/usr/bin/env bash
# Measures `syncctl sync` over a generated Active Directory export read by the LDIF connector
# (engine-only: no directory server, no target), on this machine.
#
# Usage: bench/sync-100k.sh [COUNT]          (default 100000 objects)
#
# Generates the export once with bench/gen_bench.py (fixed seed, the SYNCBENCH AD export: 85% users,
# 10% groups with members, 5% contacts), builds syncctl in release mode, then in one fresh database:
#   1. a full import, then a full sync into the empty metaverse (every object projected);
#   2. a second full sync with nothing changed (what a rule change costs: every object read,
#      recomputed and compared);
#   3. a delta sync with nothing changed;
#   4. 1% of the users get a new title in the export, a full import finds those changes, and a
#      delta sync (what this script reports as "1% delta") reads only them.
# Prints a Markdown table: wall time (/usr/bin/time), objects read by the sync, peak RSS.
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

RUN=$WORK/sync-$COUNT
rm -rf "$RUN" && mkdir -p "$RUN"
cp "$EXPORT" "$RUN/export.ldif"
cat > "$RUN/syncctl.toml" <<TOML
[store]
path = "sync.db"

[[connectors]]
name = "corp"
type = "ldif"
path = "export.ldif"
TOML

# measure LABEL CMD... : wall seconds, objects read (from --json) and peak RSS of one run.
measure() {
  local label=$1; shift
  local out
  out=$( { /usr/bin/time -f "%e %M" "$BIN" --config "$RUN/syncctl.toml" --json "$@" > "$RUN/out.json"; } 2>&1 | tail -1 )
  local wall=${out% *} rss=${out#* }
  local read
  read=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d.get("runs"); print(sum(x["counts"]["processed"] for x in r) if r else d["counts"]["adds"]+d["counts"]["updates"])' "$RUN/out.json")
  printf '| %s | %s s | %s | %s MB |\n' "$label" "$wall" "$read" "$((rss / 1024))"
}

echo
echo "| syncctl, $COUNT objects (LDIF connector) | wall | objects | peak RSS |"
echo "|---|---|---|---|"
measure "full import" import --connector corp --full
measure "full sync, empty metaverse" sync --full
measure "full sync, nothing changed" sync --full
measure "delta sync, nothing changed" sync --delta
python3 - "$RUN/export.ldif" <<'PY'
import sys
path = sys.argv[1]
out, user, n = [], 0, 0
for line in open(path, encoding="utf-8"):
    if line.startswith("title: "):
        user += 1
        if user % 85 == 0:  # 1% of all objects (users are 85% of them)
            line = "title: Changed %d\n" % user
            n += 1
    out.append(line)
open(path, "w", encoding="utf-8").writelines(out)
print("changed the title of %d users" % n, file=sys.stderr)
PY
measure "full import finding the 1% changed" import --connector corp --full
measure "1% delta sync" sync --delta
ls -l "$RUN/sync.db" | awk '{printf "database: %d MB\n", $5 / 1048576}'
