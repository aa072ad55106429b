#!/usr/bin/env bash
# Measures syncctl's full import of a generated directory from OpenLDAP against a raw
# `ldapsearch` paged dump of the same tree, in the same run, on this machine.
#
# Usage: bench/import-10k.sh [COUNT]        (default 10000 objects: 85% users, 10% groups, 5% contacts)
#
# Starts the project's OpenLDAP peer (tests/peers/slapd.sh), loads the SYNCBENCH directory of
# bench/gen_bench.py (fixed seed) under ou=bench-<COUNT>,dc=example,dc=com once (kept for later
# runs), builds syncctl in release mode, then times, three times each: the ldapsearch dump (all
# attributes, pages of 1000, to /dev/null), syncctl's full import into an empty database, and a
# delta import with nothing changed. Prints a Markdown table; the figures are wall-clock seconds
# and peak RSS from /usr/bin/time. bench/syncbench.sh measures the same ratio in its own runs.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-10000}
ROOT=$(pwd)
WORK=${SYNCCTL_BENCH_DIR:-/tmp/syncctl-bench}
mkdir -p "$WORK"

eval "$(tests/peers/slapd.sh start)"
BASE="ou=bench-$COUNT,$SYNCCTL_TEST_SLAPD_BASE"
LDAP=(-x -H "$SYNCCTL_TEST_SLAPD_URL" -D "$SYNCCTL_TEST_SLAPD_BIND_DN" -y "$SYNCCTL_TEST_SLAPD_PASSWORD_FILE")

DATA=$WORK/data-$COUNT-seed42
if [ ! -s "$DATA/manifest.json" ]; then
  rm -rf "$DATA.tmp"
  /usr/bin/python3 bench/gen_bench.py "$COUNT" "$DATA.tmp" && mv "$DATA.tmp" "$DATA"
fi
users=$((COUNT * 85 / 100))
have=$(ldapsearch "${LDAP[@]}" -LLL -b "ou=people,$BASE" -s one '(objectClass=inetOrgPerson)' 1.1 2>/dev/null | grep -c '^dn:' || true)
if [ "$have" != "$users" ]; then
  echo "loading $COUNT objects into $BASE ..." >&2
  start=$(date +%s.%N)
  # -e relax: the generated entries carry their entryUUID
  ldapadd "${LDAP[@]}" -e relax -c -f "$DATA/openldap.ldif" > /dev/null 2> "$WORK/ldapadd.err" || true
  echo "loaded in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2
fi
objects=$(ldapsearch "${LDAP[@]}" -LLL -b "$BASE" '(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))' 1.1 | grep -c '^dn:')

cargo build --release -p syncctl >&2
BIN=$ROOT/target/release/syncctl
cat > "$WORK/syncctl.toml" <<TOML
[store]
path = "bench.db"

[[connectors]]
name = "bench"
type = "ldap"
flavor = "openldap"
url = "$SYNCCTL_TEST_SLAPD_URL"
security = "plain"
bind_dn = "$SYNCCTL_TEST_SLAPD_BIND_DN"
password_file = "$SYNCCTL_TEST_SLAPD_PASSWORD_FILE"
base_dn = "$BASE"
TOML

measure() { # label, command...: prints "label wall rss_kb"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" > /dev/null
  echo "$label $(cat "$WORK/time.out")"
}

results=()
for round in 1 2 3; do
  results+=("$(measure dump ldapsearch "${LDAP[@]}" -LLL -E pr=1000/noprompt -b "$BASE" '(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))')")
  rm -f "$WORK/bench.db" "$WORK/bench.db-wal" "$WORK/bench.db-shm"
  results+=("$(measure full "$BIN" --config "$WORK/syncctl.toml" import --connector bench --full)")
  results+=("$(measure delta "$BIN" --config "$WORK/syncctl.toml" import --connector bench --delta)")
done

best() { printf '%s\n' "${results[@]}" | awk -v l="$1" '$1==l {print $2, $3}' | sort -n | head -1; }
read -r dump_s dump_kb <<< "$(best dump)"
read -r full_s full_kb <<< "$(best full)"
read -r delta_s delta_kb <<< "$(best delta)"
rate=$(awk -v n="$objects" -v t="$full_s" 'BEGIN { printf "%d", n / t }')
ratio=$(awk -v a="$full_s" -v b="$dump_s" 'BEGIN { printf "%.2f", a / b }')
size=$(du -k "$WORK/bench.db" | cut -f1)
cat <<MD
Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); OpenLDAP $(slapd -VV 2>&1 | head -1 | grep -o '[0-9]\+\.[0-9]\+\.[0-9]\+' || echo '?') on loopback. Best of 3.

| measure ($objects objects: $users users, $((objects - users)) groups) | figure |
|---|---|
| raw \`ldapsearch\` paged dump (pages of 1000) | ${dump_s} s |
| \`syncctl import --full\` into an empty database | ${full_s} s, ${rate} objects/s, peak RSS $((full_kb / 1024)) MB |
| import time / raw dump time | ${ratio} |
| \`syncctl import --delta\` with nothing changed | ${delta_s} s |
| database size after the full import | $((size / 1024)) MB |
MD
