#!/usr/bin/env bash
# SYNCBENCH: the project's benchmark (definition: README, Performance). One command per size:
#
#   bench/syncbench.sh S            10,000 objects      bench/syncbench.sh M     100,000
#   bench/syncbench.sh L            1,000,000           bench/syncbench.sh 1000  a smoke size
#   bench/syncbench.sh M --dry-run  check the tools and print the plan; load and run nothing
#
# Options: --seed N (default 42), --dry-run, --no-results (do not write bench/results/),
#          --stop-after RUN (stop cleanly once RUN is recorded, e.g. R5), --resume (go on with the
#          runs not yet recorded in $SYNCCTL_BENCH_DIR/run-<size>, on its databases and directory).
#
# L takes more than three hours on the development machine (R3b alone sends 70,000 writes at 20/s).
# To measure it in two sittings, keep the state on a disk that lasts, stop after a run and resume:
#
#   SYNCCTL_BENCH_DIR=/var/tmp/syncbench bash bench/syncbench.sh L --stop-after R5
#   SYNCCTL_BENCH_DIR=/var/tmp/syncbench bash bench/syncbench.sh L --resume
#
# A run is a checkpoint only once its record is written: a resume refuses a run directory whose
# last run was interrupted (its databases are mid-run), and one measured with other engine code
# (crates, connectors, schema); the results name every sitting.
#
# It generates the data once per size and seed (bench/gen_bench.py, kept under
# $SYNCCTL_BENCH_DIR, default /tmp/syncctl-bench), builds syncctl and the Graph emulator in release
# mode, starts its own OpenLDAP instance (tests/peers/slapd.sh with its own data dir and ports
# 3489/3736, so the test peer on 3389 is untouched) and loads the directory with `slapadd`, then:
#
#   dump   raw `ldapsearch` paged dump of the tree (pages of 1000, to /dev/null), best of 3
#          (of 1 at L, where one import takes minutes)
#   import `syncctl import --full` into an empty database, best of 3 (1 at L; for the ratio to dump)
#   R1     `syncctl cycle --full`, empty database, empty tenant (unthrottled emulator)
#   R2     `syncctl cycle --full`, a new empty database, the tenant R1 left (hard match: 0 writes)
#   R1c    `syncctl cycle` in R1's database: the next cycle, whose cloud import confirms R1's
#          exports (Entra Connect's confirming import); it settles the state R4 starts from
#   R4     `syncctl cycle`, nothing changed (this and the runs below in R1's database)
#   R3     `syncctl cycle` after 1% of the objects changed (ldapmodify change-r3.ldif)
#   R5     `syncctl sync --full` without re-import (what a rule change costs)
#   R3b    `syncctl cycle` after Microsoft's typical mix (1% added, 1% deleted, 5% modified),
#          the emulator restarted on the same tenant and throttled to Graph's rate (20 writes/s:
#          100 per 5 s windows, the client pacer set the same): the export-utilisation run
#   R6     `syncctl assess --ldif` of the same directory as an AD export
#
# Each run: wall, user+system CPU and peak RSS (/usr/bin/time), database size, the writes the
# emulator applied (/_emulator/stats) against the generator's minimum, 429s; after R1, R2, R3
# and R3b the tenant (/_emulator/state) must equal the generator's oracle, or the benchmark
# fails. Results: bench/results/<size>-<UTC date>[-N].json and .md (N counts the day's earlier
# runs: nothing is overwritten), with the machine described.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=/usr/bin/python3

SIZE=${1:?usage: bench/syncbench.sh S|M|L|COUNT [--seed N] [--dry-run] [--no-results] [--stop-after RUN] [--resume]}
shift
SEED=42 DRY=0 RESULTS=1 STOP_AFTER= RESUME=0
RUN_IDS="import R1 R2 R1c R4 R3 R5 R3b R6"
while [ $# -gt 0 ]; do
  case $1 in
    --seed) SEED=${2:?--seed N}; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --no-results) RESULTS=0; shift ;;
    --stop-after)
      STOP_AFTER=${2:?--stop-after RUN}
      grep -qw -- "$STOP_AFTER" <<<"$RUN_IDS" || { echo "syncbench: --stop-after takes one of: $RUN_IDS" >&2; exit 2; }
      shift 2 ;;
    --resume) RESUME=1; shift ;;
    *) echo "syncbench: unknown option $1" >&2; exit 2 ;;
  esac
done
case $SIZE in
  S|s) TAG=S COUNT=10000 ;;
  M|m) TAG=M COUNT=100000 ;;
  L|l) TAG=L COUNT=1000000 ;;
  *[!0-9]*|'') echo "syncbench: size must be S, M, L or a number of objects" >&2; exit 2 ;;
  *) TAG=$SIZE COUNT=$SIZE ;;
esac

# The directory and the measuring tools come from apt-get, as the test peers' do (root; a
# --dry-run only checks).
if [ "$DRY" = 0 ]; then
  PEER_NAME=syncbench
  # shellcheck source=../tests/peers/lib.sh
  . tests/peers/lib.sh
  ensure_packages slapd ldap-utils openssl curl time python3
fi
for tool in slapadd slapd ldapsearch ldapmodify curl /usr/bin/time cargo "$PY"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "syncbench: $tool is missing (apt-get install slapd ldap-utils curl time python3)" >&2; exit 1; }
done
BENCH=${SYNCCTL_BENCH_DIR:-/tmp/syncctl-bench}
DATA=$BENCH/data-$TAG-seed$SEED
RUN=$BENCH/run-$TAG
export SYNCCTL_SLAPD_DIR=$BENCH/slapd SYNCCTL_SLAPD_PORT=${SYNCBENCH_LDAP_PORT:-3489} SYNCCTL_SLAPD_LDAPS_PORT=${SYNCBENCH_LDAPS_PORT:-3736}
# 1M entries and their indexes outgrow the peer's default 4 GiB map (sparse: costs no disk)
export SYNCCTL_SLAPD_MAXSIZE=$((COUNT > 200000 ? 17179869184 : 4294967296))
THROTTLE_WRITES=100 THROTTLE_WINDOW=5 # Graph: about 3,000 writes per 150 s = 20/s

if [ "$DRY" = 1 ]; then
  free_kb=$(df -Pk "$(dirname "$BENCH")" | awk 'NR==2 {print $4}')
  cat <<PLAN
syncbench $TAG: $COUNT objects, seed $SEED (dry run: nothing generated, loaded or run)
  data      $DATA (bench/gen_bench.py $COUNT, about $((COUNT * 2 / 1000)) MB)
  openldap  own slapd in $SYNCCTL_SLAPD_DIR on 127.0.0.1:$SYNCCTL_SLAPD_PORT, slapadd of openldap.ldif
  runs      dump, import, R1, R2, R1c, R4, R3, R5, R3b (throttled $THROTTLE_WRITES writes / ${THROTTLE_WINDOW}s), R6${STOP_AFTER:+ (stopping after $STOP_AFTER)}$([ "$RESUME" = 1 ] && echo " (resuming $RUN)")
  results   bench/results/$TAG-<date>.{json,md}
  disk      $((free_kb / 1024)) MB free under $(dirname "$BENCH")
PLAN
  $PY bench/gen_bench.py --help >/dev/null
  bash -n "$0"
  exit 0
fi

log() { printf '[syncbench %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { echo "syncbench: $*" >&2; exit 1; }
mkdir -p "$BENCH"
# The engine code the figures belong to: the commit, +dirty when crates, connectors or schema differ from it.
CODE=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates connectors schema || echo '+dirty')
RECORDS=$RUN/records.jsonl
if [ "$RESUME" = 1 ]; then
  [ -s "$RUN/code" ] && [ -f "$RECORDS" ] || die "--resume: $RUN holds no earlier sitting (no $RUN/code or records.jsonl)"
  [ ! -s "$RUN/in-progress" ] || die "--resume: run $(cat "$RUN/in-progress") in $RUN was interrupted, so its databases are mid-run and no checkpoint; start over without --resume"
  SAVED=$(cat "$RUN/code")
  case $SAVED in
    *+dirty|'') die "--resume: the earlier sitting ran uncommitted engine code ($SAVED); its code cannot be checked, start over" ;;
  esac
  [[ $CODE != *+dirty ]] && git diff --quiet "$SAVED" HEAD -- crates connectors schema 2>/dev/null \
    || die "--resume: the engine code differs from the earlier sitting's ($SAVED); figures of two builds do not mix, start over"
fi

# --- data (once per size and seed)
if [ ! -s "$DATA/manifest.json" ]; then
  log "generating $COUNT objects (seed $SEED) into $DATA"
  rm -rf "$DATA.tmp"
  /usr/bin/time -f '%e s, peak RSS %M KB' "$PY" bench/gen_bench.py "$TAG" "$DATA.tmp" --seed "$SEED"
  mv "$DATA.tmp" "$DATA"
fi
BASE=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["base"])' "$DATA/manifest.json")
TENANT=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenant"])' "$DATA/manifest.json")

# --- binaries
log "building syncctl and the Graph emulator (release)"
cargo build --release -q -p syncctl -p syncctl-graph-emulator
BIN=$ROOT/target/release/syncctl
EMU_BIN=$ROOT/target/release/syncctl-graph-emulator

# --- OpenLDAP: a fresh database loaded with slapadd on every run (R3 and R3b change it); a
# resume starts slapd on the database the earlier sitting left
EMU_PID=
cleanup() {
  if [ -n "$EMU_PID" ]; then kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; fi
  tests/peers/slapd.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
tests/peers/slapd.sh stop >/dev/null 2>&1
if [ "$RESUME" = 0 ]; then
  rm -rf "$SYNCCTL_SLAPD_DIR/data" "$SYNCCTL_SLAPD_DIR/accesslog"
  tests/peers/slapd.sh start >/dev/null 2>&1   # writes the config and the base entries
  tests/peers/slapd.sh stop >/dev/null 2>&1
  log "slapadd of $DATA/openldap.ldif"
  load_start=$(date +%s.%N)
  slapadd -q -w -f "$SYNCCTL_SLAPD_DIR/slapd.conf" -b dc=example,dc=com -l "$DATA/openldap.ldif"
  LOAD_S=$(awk -v a="$load_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
else
  [ -f "$SYNCCTL_SLAPD_DIR/data/data.mdb" ] || die "--resume: no directory database in $SYNCCTL_SLAPD_DIR/data"
  LOAD_S=$(cat "$RUN/load_seconds" 2>/dev/null || true)
  # A sitting that went on would find its databases in the OS page cache; a resumed one (perhaps
  # after a reboot) reads them once first, so that its first runs are not measured against a cold
  # disk (at L, R4 and R3 waited on random reads of a 9.5 GB database at about 2 MB/s).
  log "reading the kept databases into the page cache"
  cat "$RUN"/*.db "$SYNCCTL_SLAPD_DIR/data/data.mdb" > /dev/null
fi
eval "$(tests/peers/slapd.sh start 2>/dev/null)"
LDAP=(-x -H "$SYNCCTL_TEST_SLAPD_URL" -D "$SYNCCTL_TEST_SLAPD_BIND_DN" -y "$SYNCCTL_TEST_SLAPD_PASSWORD_FILE")
FILTER='(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))'

umask 077
SECRET_FILE=$RUN/cloud.secret
if [ "$RESUME" = 0 ]; then
  rm -rf "$RUN" && mkdir -p "$RUN"
  : > "$RECORDS"
  echo "$CODE" > "$RUN/code"
  echo "$LOAD_S" > "$RUN/load_seconds"
  : > "$RUN/sittings"
  head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$SECRET_FILE"
fi
echo "$(date -u +%FT%TZ) $([ "$RESUME" = 1 ] && echo resumed || echo started) on $(hostname) with $CODE" >> "$RUN/sittings"
CLIENT_ID=5ec0be4c-0000-4000-8000-00000000b001

# --- the emulator: start_emulator WRITES WINDOW (state kept in $RUN/tenant.db across restarts)
# A restart listens on the port of the first start: the delta links syncctl holds name it, and a
# link to another address would turn R3b's cloud import into a full one (a resume too).
EMU_LISTEN=$(cat "$RUN/emulator.addr" 2>/dev/null || echo 127.0.0.1:0)
start_emulator() {
  if [ -n "$EMU_PID" ]; then kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true; EMU_PID=; fi
  : > "$RUN/emulator.out"
  SYNCCTL_EMULATOR_CLIENT_SECRET=$(cat "$SECRET_FILE") RUST_LOG=warn "$EMU_BIN" --listen "$EMU_LISTEN" \
    --state "$RUN/tenant.db" --tenant "$TENANT" --verified-domain corp.example.com --client-id "$CLIENT_ID" \
    --write-budget "$1" --write-window "$2" > "$RUN/emulator.out" 2> "$RUN/emulator.err" &
  EMU_PID=$!
  for _ in $(seq 100); do [ -s "$RUN/emulator.out" ] && break; sleep 0.1; done
  EMU_URL=$(head -1 "$RUN/emulator.out")
  [ -n "$EMU_URL" ] || { cat "$RUN/emulator.err" >&2; echo "syncbench: the emulator did not start" >&2; exit 1; }
  EMU_LISTEN=${EMU_URL#http://}
  echo "$EMU_LISTEN" > "$RUN/emulator.addr"
}

# write_config DB WRITES WINDOW: the syncctl config of a run (source: the OpenLDAP tree; target: the emulator)
write_config() {
  cat > "$RUN/syncctl.toml" <<TOML
[store]
path = "$1"

[[connectors]]
name = "ol"
type = "ldap"
flavor = "openldap"
url = "$SYNCCTL_TEST_SLAPD_URL"
security = "plain"
bind_dn = "$SYNCCTL_TEST_SLAPD_BIND_DN"
password_file = "$SYNCCTL_TEST_SLAPD_PASSWORD_FILE"
base_dn = "$BASE"
object_types = ["inetOrgPerson", "groupOfNames"]

[[connectors]]
name = "cloud"
type = "graph"
tenant = "$TENANT"
client_id = "$CLIENT_ID"
client_secret_file = "cloud.secret"
authority = "$EMU_URL"
graph_url = "$EMU_URL/v1.0"
write_budget = $2
write_window_seconds = $3

[sync]
# the benchmark's own deletes (1% in R3b) are expected
deletion_threshold = 0
TOML
}

stats() { curl -sf "$EMU_URL/_emulator/stats"; }

# measure RUN_ID MIN_WRITES ORACLE|- CMD...: runs CMD under /usr/bin/time, appends a JSON record
measure() {
  local id=$1 min=$2 oracle=$3; shift 3
  local before after rc=0 launched
  before=$(stats)
  log "$id: $*"
  # when the command was launched (ms), for R3's time to pending exports ready: from here to
  # the end of the cycle's last sync (run history)
  launched=$(date +%s%3N)
  /usr/bin/time -f '%e %U %S %M' -o "$RUN/$id.time" "$@" > "$RUN/$id.out" 2> "$RUN/$id.err" || rc=$?
  after=$(stats)
  local verdict=null
  if [ "$oracle" != - ]; then
    curl -sf "$EMU_URL/_emulator/state" > "$RUN/$id.state.json"
    verdict=$($PY bench/oracle_check.py "$DATA/$oracle" "$RUN/$id.state.json" 2> "$RUN/$id.oracle.err") || true
  fi
  # the phases of a cycle (import, sync, export per connector) from run history
  : > "$RUN/$id.runs.json"
  if grep -q '"steps"' "$RUN/$id.out" 2>/dev/null; then
    "$BIN" --config "$RUN/syncctl.toml" --json runs > "$RUN/$id.runs.json" 2>/dev/null || true
  fi
  local db=0
  if [ -f "$RUN/$DB" ]; then db=$(du -ck "$RUN/$DB"* | tail -1 | cut -f1); fi
  $PY - "$id" "$rc" "$min" "$RUN/$id.time" "$before" "$after" "$verdict" "$db" "$*" "$RUN/$id.out" "$RUN/$id.runs.json" "$launched" >> "$RECORDS" <<'PY'
import json, sys
rid, rc, mn, tfile, before, after, verdict, db, cmd, out, runs, launched = sys.argv[1:]
phases = []
try:
    steps = json.load(open(out)).get("steps", [])
    by_id = {r["id"]: r for r in json.load(open(runs))}
    phases = [{"connector": s["connector"], "profile": s["profile"],
               "seconds": by_id[s["run_id"]]["duration_ms"] / 1000 if s["run_id"] in by_id else None,
               "ended_at_ms": by_id[s["run_id"]]["ended_at_ms"] if s["run_id"] in by_id else None}
              for s in steps]
except (ValueError, OSError, AttributeError, KeyError, TypeError):
    pass
wall, user, sys_, rss = open(tfile).read().split()[-4:]
b, a = json.loads(before), json.loads(after)
writes = sum(a["writesByMethod"].values()) - sum(b["writesByMethod"].values()) if "writesByMethod" in a else \
    sum(a["writes_by_method"].values()) - sum(b["writes_by_method"].values())
key = lambda d, k: d.get(k, 0)
print(json.dumps({
    "run": rid, "command": cmd, "exit": int(rc),
    "wall_s": float(wall), "cpu_s": round(float(user) + float(sys_), 2), "peak_rss_mb": round(int(rss) / 1024, 1),
    "db_mb": round(int(db) / 1024, 1),
    "writes": writes, "min_writes": None if mn == "-" else int(mn),
    "throttled_429": key(a, "throttled") - key(b, "throttled"), "refused": key(a, "refused") - key(b, "refused"),
    "writes_by_template": {k: v - b.get("writes", {}).get(k, 0) for k, v in a.get("writes", {}).items() if v != b.get("writes", {}).get(k, 0)},
    "oracle": None if verdict == "null" else json.loads(verdict), "phases": phases,
    "launched_at_ms": int(launched),
}, sort_keys=True))
PY
  if ! grep -qw -- "$rc" <<<"${OK_EXIT:-0}"; then tail -5 "$RUN/$id.err" >&2; echo "syncbench: $id failed (exit $rc)" >&2; exit 1; fi
  if [ "$oracle" != - ] && ! grep -q '"equal": true' <<<"$verdict"; then
    cat "$RUN/$id.oracle.err" >&2; echo "syncbench: $id: the tenant differs from $oracle; the run does not count" >&2; exit 1
  fi
}

# step RUN: true when RUN (dump, import, R1, ...) is still to measure. A recorded run is skipped
# (--resume). Until the run is recorded, $RUN/in-progress names it: its state is no checkpoint.
step() {
  if grep -q "\"run\": \"$1[0-9]*\"" "$RECORDS"; then log "$1: recorded in an earlier sitting"; return 1; fi
  echo "$1" > "$RUN/in-progress"
}
# done_step RUN: RUN is recorded; stop here when --stop-after names it
done_step() {
  : > "$RUN/in-progress"
  if [ "$STOP_AFTER" = "$1" ]; then
    log "stopped after $1 as asked; go on with: SYNCCTL_BENCH_DIR=$BENCH bash bench/syncbench.sh $SIZE --seed $SEED --resume"
    exit 0
  fi
}

UNTHROTTLED=1000000000
start_emulator "$UNTHROTTLED" 1
METRIC_MIN() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["minimum_writes"][sys.argv[2]])' "$DATA/manifest.json" "$1"; }

# --- the directory's own limit, and syncctl's import of it (best of 3 each; of 1 at L)
ROUNDS=$((COUNT >= 1000000 ? 1 : 3))
DB=import.db
write_config "$DB" "$UNTHROTTLED" 1
if step import; then   # the dumps and the imports, one step
  for round in $(seq "$ROUNDS"); do
    measure "dump$round" - - ldapsearch "${LDAP[@]}" -LLL -E pr=1000/noprompt -b "$BASE" "$FILTER"
    rm -f "$RUN/$DB"*
    measure "import$round" - - "$BIN" --config "$RUN/syncctl.toml" import --connector ol --full
  done
  rm -f "$RUN/$DB"*
  done_step import
fi

# --- R1, R2, R4, R3, R5, R3b, R6
DB=r1.db; write_config "$DB" "$UNTHROTTLED" 1
step R1 && { measure R1 "$(METRIC_MIN R1)" oracle-base.json "$BIN" --config "$RUN/syncctl.toml" --json cycle --full; done_step R1; }
DB=r2.db; write_config "$DB" "$UNTHROTTLED" 1
step R2 && { measure R2 0 oracle-base.json "$BIN" --config "$RUN/syncctl.toml" --json cycle --full; rm -f "$RUN/$DB"*; done_step R2; }
# The delta runs go on in R1's database: the engine deletes in the cloud only what it created
# (an object it joined by hard match in R2 is disconnected, not deleted, when its source goes).
DB=r1.db; write_config "$DB" "$UNTHROTTLED" 1
step R1c && { measure R1c 0 oracle-base.json "$BIN" --config "$RUN/syncctl.toml" --json cycle; done_step R1c; }
step R4 && { measure R4 0 - "$BIN" --config "$RUN/syncctl.toml" --json cycle; done_step R4; }
if step R3; then
  ldapmodify "${LDAP[@]}" -f "$DATA/change-r3.ldif" > /dev/null
  measure R3 "$(METRIC_MIN R3)" oracle-r3.json "$BIN" --config "$RUN/syncctl.toml" --json cycle
  done_step R3
fi
step R5 && { measure R5 0 - "$BIN" --config "$RUN/syncctl.toml" --json sync --full; done_step R5; }
if step R3b; then
  start_emulator "$THROTTLE_WRITES" "$THROTTLE_WINDOW"
  write_config "$DB" "$THROTTLE_WRITES" "$THROTTLE_WINDOW"
  ldapmodify "${LDAP[@]}" -e relax -f "$DATA/change-r3b.ldif" > /dev/null
  measure R3b "$(METRIC_MIN R3b)" oracle-r3b.json "$BIN" --config "$RUN/syncctl.toml" --json cycle
  done_step R3b
fi
DB=none
# assess exits 2 when it finds blockers, which the generated export carries on purpose
step R6 && { OK_EXIT="0 2" measure R6 - - "$BIN" --json assess --ldif "$DATA/ad.ldif"; done_step R6; }

# --- results
DATE=$(date -u +%Y-%m-%d)
OUT=$RUN/result
$PY bench/syncbench_report.py "$RECORDS" "$DATA/manifest.json" "$OUT" \
  --size "$TAG" --load-seconds "$LOAD_S" --throttle "$THROTTLE_WRITES/$THROTTLE_WINDOW" \
  --slapd "$(slapd -VV 2>&1 | grep -o '[0-9]\+\.[0-9]\+\.[0-9]\+' | head -1)" \
  --rustc "$(rustc -V)" --commit "$CODE" --sittings "$RUN/sittings"
if [ "$RESULTS" = 1 ]; then
  mkdir -p bench/results
  # A second run on the same day gets its own name (-2, -3, ...): results are never overwritten.
  NAME=$TAG-$DATE n=1
  while [ -e "bench/results/$NAME.json" ] || [ -e "bench/results/$NAME.md" ]; do n=$((n + 1)); NAME=$TAG-$DATE-$n; done
  cp "$OUT.json" "bench/results/$NAME.json"
  cp "$OUT.md" "bench/results/$NAME.md"
  log "results: bench/results/$NAME.{json,md}"
fi
cat "$OUT.md"
