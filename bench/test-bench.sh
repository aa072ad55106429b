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

# M and L carry 50,000-member groups and five-level nesting; the minimum writes count the
# member PATCHes past the 20 bound at creation (one per further 20).
$PY bench/gen_bench.py 100000 "$T/m" --seed 7
$PY - "$T/m" <<'PY' || { echo "FAIL: the 100,000-object directory lacks its large or nested groups" >&2; exit 1; }
import json, sys
d = sys.argv[1]
m = json.load(open(f"{d}/manifest.json"))
assert (m["big_groups"], m["largest_group"], m["nested_groups"]) == (1, 50000, 799), m
patches = 0
o = json.load(open(f"{d}/oracle-base.json"))
group_ids = {g["onPremisesImmutableId"] for g in o["groups"]}
inner = {g["onPremisesImmutableId"]: [x for x in g["members"] if x in group_ids] for g in o["groups"]}
depth = lambda g: 1 + max((depth(x) for x in inner[g]), default=0)
assert max(depth(g) for g in inner) == 5, "no chain of five nested groups"
patches = sum((len(g["members"]) - 1) // 20 for g in o["groups"] if len(g["members"]) > 20)
assert m["minimum_writes"]["R1"] == m["users"] + m["groups"] + patches, m["minimum_writes"]
PY
echo "ok: 100,000 objects carry a 50,000-member group, 5-level nesting, and count its member PATCHes"

# A resume (--resume) goes on only from a checkpoint of the same engine code: it refuses a run
# directory whose last run was interrupted, one measured with other code or with uncommitted
# code, and one with no earlier sitting. These refusals come before anything is built or started.
resume() { # RUN_DIR_SETUP... -> the refusal message (the command must fail)
  local out
  if out=$(SYNCCTL_BENCH_DIR="$T/bench" bash bench/syncbench.sh 1000 --resume 2>&1); then
    echo "FAIL: --resume went on from $1" >&2; exit 1
  fi
  grep -q -- "$2" <<<"$out" || { echo "FAIL: --resume from $1 said: $out" >&2; exit 1; }
}
R=$T/bench/run-1000
resume "an empty bench directory" "holds no earlier sitting"
mkdir -p "$R" && : > "$R/records.jsonl" && git rev-parse --short HEAD > "$R/code" && echo R3b > "$R/in-progress"
resume "an interrupted R3b" "run R3b in $R was interrupted"
: > "$R/in-progress"
git rev-parse --short HEAD > "$R/code" && sed -i 's/$/+dirty/' "$R/code"
resume "uncommitted code" "ran uncommitted engine code"
# a commit this checkout does not have (a shallow clone has no other to name)
echo 0000000 > "$R/code"
resume "another commit's code" "the engine code differs from the earlier sitting"
if out=$(bash bench/syncbench.sh 1000 --stop-after R9 2>&1); then echo "FAIL: --stop-after R9 was taken" >&2; exit 1; fi
grep -q "stop-after takes one of" <<<"$out" || { echo "FAIL: --stop-after R9 said: $out" >&2; exit 1; }
echo "ok: --resume refuses no sitting, an interrupted run, uncommitted and other engine code; --stop-after checks its run"
