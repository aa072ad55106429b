#!/usr/bin/python3
"""SYNCBENCH report: turns the run records of bench/syncbench.sh into OUT.json and OUT.md, with
the machine described and each figure set against its target (README, Performance).

Usage: syncbench_report.py RECORDS_JSONL MANIFEST_JSON OUT_PREFIX --size S [--load-seconds X]
       [--throttle W/S] [--slapd VERSION] [--rustc VERSION] [--commit REV] [--sittings FILE]

A benchmark measured in more than one sitting (--stop-after, then --resume) lists them from
FILE (one line each: when, started or resumed, host, commit).
"""
import argparse
import json
import os
import platform
import subprocess

# Targets per size (performance.md): seconds, except rss (MB) and ratio.
TARGETS = {
    "S": {"R1": 1, "R2": 1, "R3": 0.2, "R4": 0.05, "R5": 0.5, "R6": 1, "rss": 64, "ratio": 1.5},
    "M": {"R1": 6, "R2": 6, "R3": 0.5, "R4": 0.1, "R5": 4, "R6": 5, "rss": 256, "ratio": 1.5},
    "L": {"R1": 60, "R2": 60, "R3": 2, "R4": 0.3, "R5": 40, "R6": 45, "rss": 1024, "ratio": 1.5},
}
LABELS = {
    "R1": "R1 full cycle, empty tenant",
    "R1c": "R1c the next delta cycle (confirming import of R1's exports)",
    "R2": "R2 full cycle, every object already in the tenant",
    "R3": "R3 delta cycle, 1% changed",
    "R3b": "R3b delta cycle, 1% added, 1% deleted, 5% modified (throttled to Graph's rate)",
    "R4": "R4 delta cycle, nothing changed",
    "R5": "R5 full sync without re-import (a rule change)",
    "R6": "R6 `assess --ldif` of the same directory (AD export)",
}


def machine():
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    os_name = ""
    try:
        for line in open("/etc/os-release", encoding="utf-8"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(), "ram_gib": round(mem_kb / 1048576, 1), "cpu_model": model,
        "kernel": platform.release(), "os": os_name, "loadavg_at_end": first(["cat", "/proc/loadavg"]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("records")
    ap.add_argument("manifest")
    ap.add_argument("out")
    ap.add_argument("--size", required=True)
    # empty when a resumed run directory did not keep it
    ap.add_argument("--load-seconds", type=lambda v: float(v) if v.strip() else None)
    ap.add_argument("--throttle", default="")
    ap.add_argument("--slapd", default="")
    ap.add_argument("--rustc", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--sittings")
    a = ap.parse_args()
    man = json.load(open(a.manifest, encoding="utf-8"))
    recs = [json.loads(line) for line in open(a.records, encoding="utf-8") if line.strip()]
    sittings = []
    if a.sittings:
        sittings = [line.strip() for line in open(a.sittings, encoding="utf-8") if line.strip()]
    by = {r["run"]: r for r in recs}
    best = lambda prefix: min((r for r in recs if r["run"].startswith(prefix) and r["run"][len(prefix):].isdigit()),
                              key=lambda r: r["wall_s"])
    dump, imp = best("dump"), best("import")
    rounds = sum(1 for r in recs if r["run"].startswith("dump") and r["run"][4:].isdigit())
    ratio = round(imp["wall_s"] / dump["wall_s"], 2) if dump["wall_s"] > 0 else None
    targets = TARGETS.get(a.size, {})
    throttled = by.get("R3b")
    utilisation = utilisation_cycle = None
    export_s = lambda r: sum(p["seconds"] or 0 for p in r.get("phases", []) if p["profile"] == "export")
    if throttled and a.throttle:
        w, s = (float(x) for x in a.throttle.split("/"))
        # Meaningful only when the writes outlast one window. The target is the export's: its
        # writes over the export phase's time at the budget's rate; the whole cycle's (imports
        # and syncs included) is a lower bound, shown beside it.
        if throttled["writes"] > w and throttled["wall_s"] > s:
            # The budget of a span of T seconds: every window it touches, the first from its
            # start (floor(T / s) + 1 windows), so a run that sends the whole budget of each
            # window it spans is at 100%, not above.
            budget = lambda t: (int(t // s) + 1) * w
            utilisation_cycle = round(throttled["writes"] / budget(throttled["wall_s"]), 3)
            if export_s(throttled) > s:
                utilisation = round(throttled["writes"] / budget(export_s(throttled)), 3)
    # R3's target is the time until the pending exports are ready: from the command's launch to
    # the end of the cycle's last sync (its last batch committed), from run history. Records
    # without those times (made before they were kept) fall back to the cycle less its export,
    # which also counts what the process does after the export (closing the database
    # checkpoints its WAL); both are shown.
    r3 = by.get("R3")
    r3_less_export = round(r3["wall_s"] - export_s(r3), 2) if r3 and r3.get("phases") else None
    def to_ready(r):
        ends = [p.get("ended_at_ms") for p in r.get("phases", []) if p["profile"] != "export"]
        if not r.get("launched_at_ms") or not ends or not all(ends):
            return None
        return round((max(ends) - r["launched_at_ms"]) / 1000, 2)
    r3_ready = (to_ready(r3) if r3 else None)
    if r3_ready is None:
        r3_ready = r3_less_export
    result = {
        "benchmark": "SYNCBENCH", "size": a.size, "objects": man["count"], "seed": man["seed"],
        "directory": {k: man[k] for k in ("users", "groups", "contacts", "users_with_manager", "changes")},
        "machine": dict(machine(), rustc=a.rustc, openldap=a.slapd), "commit": a.commit,
        "slapadd_seconds": a.load_seconds, "sittings": sittings,
        "dump": {"wall_s": dump["wall_s"]}, "import_full": {k: imp[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "db_mb")},
        "import_to_dump_ratio": ratio,
        "R3_to_pending_exports_ready_s": r3_ready,
        "R3_cycle_less_export_s": r3_less_export,
        "throttle": {"writes_per_window": a.throttle, "utilisation_R3b": utilisation,
                     "utilisation_R3b_whole_cycle": utilisation_cycle,
                     "throttled_429": throttled["throttled_429"] if throttled else None},
        "runs": [r for r in recs if r["run"] in LABELS], "all_records": recs, "targets": targets,
        "not_measured": [r for r in LABELS if r not in by],
    }
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")

    m = result["machine"]
    md = [
        f"# SYNCBENCH {a.size}: {man['count']:,} objects ({man['users']:,} users, {man['groups']:,} groups, "
        f"{man['contacts']:,} contacts), seed {man['seed']}",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['ram_gib']} GiB, {m['os']}, Linux {m['kernel']}; "
        f"{a.rustc}; OpenLDAP {a.slapd} on loopback (plain LDAP); syncctl {a.commit}. "
        f"Load average at the end: {m['loadavg_at_end']}.",
        "",
        ("Measured in " + str(len(sittings)) + " sittings, each run whole within one (the state kept on disk "
         "between them): " + "; ".join(sittings) + ".\n\n" if len(sittings) > 1 else "")
        + "Directory loaded with `slapadd` in "
        + (f"{a.load_seconds} s" if a.load_seconds is not None else "a time not recorded")
        + f". Raw `ldapsearch` paged dump (best of {rounds}): "
        f"{dump['wall_s']} s; `syncctl import --full` into an empty database (best of {rounds}): {imp['wall_s']} s, "
        f"{imp['cpu_s']} s CPU, peak RSS {imp['peak_rss_mb']} MB, database {imp['db_mb']} MB.",
        "",
        *([f"Not measured yet (a sitting stopped before them; `--resume` goes on): "
            f"{', '.join(r for r in LABELS if r not in by)}.", ""] if any(r not in by for r in LABELS) else []),
        "| run | wall | CPU | peak RSS | database | cloud writes (minimum) | oracle | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rid in ("R1", "R1c", "R2", "R4", "R3", "R3b", "R5", "R6"):
        r = by.get(rid)
        if not r:
            continue
        t = targets.get(rid)
        measured = r3_ready if rid == "R3" and r3_ready is not None else r["wall_s"]
        met = "" if t is None else ("yes" if measured <= t and (rid != "R2" or r["writes"] == 0) else "**no**")
        target = "" if t is None else f"<= {t} s" + (", 0 writes" if rid == "R2" else "")
        if rid == "R3" and t is not None and r3_ready is not None:
            target += f" to pending exports ready (here {r3_ready} s"
            if r3_less_export is not None and r3_less_export != r3_ready:
                target += f"; the cycle less its export: {r3_less_export} s"
            target += ")"
        if rid == "R3b":
            target = ">= 95% of the write budget, no 429 storm"
            met = ("n/a: fewer writes than one window" if utilisation is None else
                   "yes" if utilisation >= 0.95 and r["throttled_429"] == 0 else "**no**")
        writes = "" if rid in ("R5", "R6") else f"{r['writes']:,} ({r['min_writes']:,})"
        oracle = "" if r["oracle"] is None else ("equal" if r["oracle"]["equal"] else "DIFFERS")
        md.append(f"| {LABELS[rid]} | {r['wall_s']} s | {r['cpu_s']} s | {r['peak_rss_mb']} MB | "
                  f"{r['db_mb'] or ''}{' MB' if r['db_mb'] else ''} | {writes} | {oracle} | {target} | {met} |")
    peak = max(r["peak_rss_mb"] for r in recs if r["run"] in LABELS or r["run"].startswith("import"))
    result["peak_rss_mb"] = peak
    if targets:
        md.append(f"| peak RSS, all syncctl runs | | | {peak} MB | | | | <= {targets['rss']} MB | "
                  f"{'yes' if peak <= targets['rss'] else '**no**'} |")
        md.append(f"| import / raw dump | {ratio} | | | | | | <= {targets['ratio']} | "
                  f"{'yes' if ratio is not None and ratio <= targets['ratio'] else '**no**'} |")
    else:
        md.append(f"| peak RSS, all syncctl runs | | | {peak} MB | | | | | |")
        md.append(f"| import / raw dump | {ratio} | | | | | | | |")
    if throttled:
        md += ["", f"R3b throttled at {a.throttle.replace('/', ' writes per ')} s (Graph's 3,000 per 150 s rate), emulator and client pacer alike: "
               f"{throttled['writes']} writes in an export phase of {round(export_s(throttled), 2)} s, utilisation "
               f"{'not measurable (fewer writes than one window)' if utilisation is None else f'{utilisation:.0%}'} of the budget during the export "
               f"({'-' if utilisation_cycle is None else f'{utilisation_cycle:.0%}'} over the whole {throttled['wall_s']} s cycle with its imports and syncs), "
               f"{throttled['throttled_429']} answers 429."]
    md += ["", "Where the wall time of each cycle goes (run history: import, sync, export per connector):", ""]
    for rid in ("R1", "R1c", "R2", "R4", "R3", "R3b"):
        if rid in by and by[rid].get("phases"):
            t = ", ".join(f"{p['connector']} {p['profile']} {p['seconds']} s" for p in by[rid]["phases"])
            md.append(f"- {rid}: {t}")
    md += ["", "Writes by request (emulator stats):", ""]
    for rid in ("R1", "R1c", "R2", "R4", "R3", "R3b"):
        if rid in by:
            t = ", ".join(f"`{k}` {v}" for k, v in sorted(by[rid]["writes_by_template"].items())) or "none"
            md.append(f"- {rid}: {t}")
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(a.out + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
