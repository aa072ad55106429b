#!/usr/bin/env bash
# Tests of the SYNCBENCH tooling (no server, no timing): the generator gives byte-identical files
# for the same seed and different ones for another seed; the oracle check accepts a tenant built
# from the oracle and refuses one that differs by a single value, member or object.
#
# Usage: bench/test-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3

$PY bench/gen_bench.py 1000 "$T/a" --seed 7
$PY bench/gen_bench.py 1000 "$T/b" --seed 7
$PY bench/gen_bench.py 1000 "$T/c" --seed 8
diff -r "$T/a" "$T/b" >/dev/null || { echo "FAIL: same seed, different files" >&2; exit 1; }
if cmp -s "$T/a/openldap.ldif" "$T/c/openldap.ldif"; then echo "FAIL: another seed, same directory" >&2; exit 1; fi
echo "ok: generator deterministic (seed 7 twice identical, seed 8 differs)"

# A tenant state as the emulator returns it, built from an oracle (ids made up), with an edit.
state() { # ORACLE EDIT -> state JSON on stdout
  $PY - "$1" "$2" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
edit = sys.argv[2]
ids = {}
users = []
for n, u in enumerate(o["users"]):
    ids[u["onPremisesImmutableId"]] = f"u{n}"
    users.append(dict(u, id=f"u{n}", mail=None))
groups = [dict(g, id=f"g{n}", members=[ids[m] for m in g["members"]]) for n, g in enumerate(o["groups"])]
users.append({"id": "admin", "userPrincipalName": "admin@contoso.onmicrosoft.com", "onPremisesImmutableId": None})
if edit == "title":
    users[5]["jobTitle"] = "Changed"
elif edit == "member":
    groups[3]["members"].pop()
elif edit == "missing":
    users.pop(7)
elif edit == "extra":
    users.append({"id": "x", "onPremisesImmutableId": "00000000-0000-4000-8000-000000000000", "displayName": "x"})
print(json.dumps({"users": users, "groups": groups}))
PY
}
state "$T/a/oracle-base.json" none | $PY bench/oracle_check.py "$T/a/oracle-base.json" - >/dev/null \
  || { echo "FAIL: the oracle check refused the oracle itself" >&2; exit 1; }
for edit in title member missing extra; do
  if state "$T/a/oracle-base.json" "$edit" | $PY bench/oracle_check.py "$T/a/oracle-base.json" - >/dev/null 2>&1; then
    echo "FAIL: the oracle check accepted a tenant with one $edit difference" >&2; exit 1
  fi
done
# The R3 oracle differs from the base one (1% new titles): a base tenant must fail against it.
if state "$T/a/oracle-base.json" none | $PY bench/oracle_check.py "$T/a/oracle-r3.json" - >/dev/null 2>&1; then
  echo "FAIL: the base tenant passed the R3 oracle" >&2; exit 1
fi
echo "ok: oracle check accepts the oracle, refuses one changed title, member, missing or extra object"
