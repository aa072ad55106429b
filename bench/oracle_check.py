#!/usr/bin/python3
"""SYNCBENCH correctness gate: compares the Graph emulator's state with the generator's oracle.

Usage: oracle_check.py ORACLE_JSON STATE_JSON   (STATE_JSON: `GET /_emulator/state`, or - for stdin)

Every oracle user and group must be in the tenant with equal onPremisesImmutableId,
userPrincipalName, displayName and jobTitle (users), displayName and members (groups, compared as
the members' onPremisesImmutableIds); every user or group of the tenant that carries an
onPremisesImmutableId must be in the oracle. Cloud-only objects (no onPremisesImmutableId) are
counted, not compared. Prints a one-line JSON verdict; exit 0 when equal, 1 otherwise (the first
differences on stderr).
"""
import json
import sys

USER_FIELDS = ("displayName", "jobTitle", "userPrincipalName")
GROUP_FIELDS = ("displayName",)


def main():
    oracle = json.load(open(sys.argv[1], encoding="utf-8"))
    state = json.load(sys.stdin if sys.argv[2] == "-" else open(sys.argv[2], encoding="utf-8"))
    anchor_of = {}
    for o in state.get("users", []) + state.get("groups", []):
        if o.get("onPremisesImmutableId"):
            anchor_of[o["id"]] = o["onPremisesImmutableId"]
    diffs, cloud_only = [], 0
    for kind, fields in (("users", USER_FIELDS), ("groups", GROUP_FIELDS)):
        want = {o["onPremisesImmutableId"]: o for o in oracle[kind]}
        have = {}
        for o in state.get(kind, []):
            a = o.get("onPremisesImmutableId")
            if not a:
                cloud_only += 1
                continue
            if a in have:
                diffs.append(f"{kind} {a}: twice in the tenant")
            have[a] = o
        for a in sorted(want.keys() - have.keys()):
            diffs.append(f"{kind} {a}: missing from the tenant")
        for a in sorted(have.keys() - want.keys()):
            diffs.append(f"{kind} {a}: in the tenant, not in the oracle")
        for a in sorted(want.keys() & have.keys()):
            w, h = want[a], have[a]
            for f in fields:
                if w.get(f) != h.get(f):
                    diffs.append(f"{kind} {a}: {f} is {h.get(f)!r}, expected {w.get(f)!r}")
            if kind == "groups":
                members = sorted(anchor_of.get(m, f"(cloud-only {m})") for m in h.get("members", []))
                if members != w["members"]:
                    diffs.append(f"groups {a}: members {members}, expected {w['members']}")
    verdict = {
        "equal": not diffs,
        "users": len(oracle["users"]),
        "groups": len(oracle["groups"]),
        "cloud_only": cloud_only,
        "differences": len(diffs),
    }
    print(json.dumps(verdict, sort_keys=True))
    for d in diffs[:20]:
        print(f"oracle: {d}", file=sys.stderr)
    sys.exit(0 if not diffs else 1)


if __name__ == "__main__":
    main()
