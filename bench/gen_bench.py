#!/usr/bin/python3
"""SYNCBENCH data generator: deterministic, seeded, streaming (Python 3 standard library only).

Writes, for a directory of COUNT objects (85% users, 10% groups, 5% contacts), into OUT_DIR:

  openldap.ldif      the directory for `slapadd` (OpenLDAP flavor: inetOrgPerson users and
                     groupOfNames groups with their entryUUID, organizationalPerson contacts),
                     under ou=bench-<TAG>,<SUFFIX>
  ad.ldif            the same objects as an Active Directory export (objectGUID, sAMAccountName,
                     userPrincipalName, proxyAddresses, ...; `contact` objects), for the LDIF
                     connector and `syncctl assess --ldif`; about 4% of its users carry one of
                     the defects the readiness report looks for (a space or comma in the UPN,
                     .local, a diacritic, no UPN, a duplicate proxy address, an overlong
                     givenName, an X500 address)
  change-r3.ldif     ldapmodify input for R3: 1% of the objects (users) get a new title
  change-r3b.ldif    ldapmodify input for R3b, applied after R3: 1% added (with their entryUUID,
                     so `ldapmodify -e relax`), 1% deleted, 5% modified (title)
  oracle-base.json   what the cloud tenant must hold after a cycle of openldap.ldif
  oracle-r3.json     ... after change-r3.ldif
  oracle-r3b.json    ... after change-r3b.ldif
  manifest.json      counts, the tenant's domains and the minimum cloud writes per run

The oracle lists every user and group (contacts are not synchronized from OpenLDAP) with
onPremisesImmutableId (the entryUUID), userPrincipalName after the directory-sync rewrite (a
domain the tenant has not verified becomes the tenant's initial domain), displayName, jobTitle,
and for groups the members as onPremisesImmutableIds, sorted.

Every object is a pure function of (seed, kind, index, phase): nothing is held in memory, so
1,000,000 objects take the same few MB as 10,000, and the same seed gives byte-identical files.
Users in the deleted 1% are never group members nor managers, so the deletes touch nothing else.

From 100,000 objects on (M and L) the directory also carries what large tenants have: one group of
50,000 members per 100,000 objects (groups 0, 1, ...), and nested groups five levels deep (in each
run of 50 groups, group 50k+1 has group 50k as a member, 50k+2 has 50k+1, up to 50k+4).

Usage: gen_bench.py (S|M|L|COUNT) OUT_DIR [--seed N] [--suffix DN] [--tenant DOMAIN]
"""
import argparse
import base64
import json
import os
import random
import sys
import uuid

SIZES = {"S": 10_000, "M": 100_000, "L": 1_000_000}
FIRST = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
         "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoe"]
LAST = ["Anders", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jones",
        "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Silva", "Tanaka"]
DEPTS = ["Sales", "Engineering", "Finance", "Legal", "Support", "Marketing", "Operations", "HR"]
TITLES = ["Engineer", "Manager", "Analyst", "Director", "Associate", "Consultant", "Specialist"]
VERIFIED = "corp.example.com"       # verified in the emulator's tenant
UNVERIFIED = "legacy.example.net"   # not verified: UPNs there are rewritten to the initial domain
AD_BASE = "DC=corp,DC=example,DC=com"


class Plan:
    """The shape of a directory of `count` objects and its change sets."""

    def __init__(self, count, seed, suffix, tenant, tag):
        self.count, self.seed, self.tenant = count, seed, tenant
        self.users = count * 85 // 100
        self.groups = count * 10 // 100
        self.contacts = count - self.users - self.groups
        self.base = f"ou=bench-{tag},{suffix}"
        # R3b adds count/100 users after the existing ones.
        self.added = count // 100
        # M and L: 50,000-member groups and 5-level nesting (the benchmark definition)
        self.big_groups = count // 100_000 if count >= 100_000 else 0
        self.big_size = min(50_000, self.users * 2 // 3)
        self.nested = count >= 100_000

    # Change sets, by user index: disjoint residues (i % 85 == 1 -> i % 17 == 1, and so on).
    @staticmethod
    def r3_modified(i):
        return i % 85 == 1

    @staticmethod
    def r3b_deleted(i):
        return i % 85 == 2

    @staticmethod
    def r3b_modified(i):
        return i % 17 == 3

    def rng(self, kind, i):
        return random.Random(f"{self.seed}:{kind}:{i}")

    def stable_user(self, rng):
        """A user index that no change set deletes (members and managers are drawn from these)."""
        j = rng.randrange(self.users)
        return j - 1 if self.r3b_deleted(j) else j

    def user(self, i, phase):
        """User i in phase 0 (base), 1 (after R3) or 2 (after R3b); None when it does not exist."""
        if i >= self.users and (phase < 2 or i >= self.users + self.added):
            return None
        if i < self.users and phase == 2 and self.r3b_deleted(i):
            return None
        r = self.rng("user", i)
        u = {"i": i, "uuid": str(uuid.UUID(bytes=r.randbytes(16), version=4))}
        u["first"], u["last"] = r.choice(FIRST), r.choice(LAST)
        u["uid"] = f"u{i:07d}"
        u["dn"] = f"uid={u['uid']},ou=people,{self.base}"
        u["ad_dn"] = f"CN={u['uid']},OU=People,OU=bench,{AD_BASE}"
        domain = UNVERIFIED if r.random() < 0.1 else VERIFIED
        u["local"] = f"{u['first'].lower()}.{u['last'].lower()}.{i}"
        u["mail"] = f"{u['local']}@{domain}"
        u["upn_cloud"] = u["mail"] if domain == VERIFIED else f"{u['local']}@{self.tenant}"
        title = r.choice(TITLES)
        if phase >= 1 and self.r3_modified(i):
            title = f"Lead {title}"
        if phase >= 2 and self.r3b_modified(i):
            title = f"Senior {title}"
        u["title"] = title
        u["dept"] = r.choice(DEPTS)
        u["phone"] = f"+1 555 {r.randrange(1000, 9999)}"
        u["mobile"] = f"+1 555 {r.randrange(1000, 9999)}"
        u["contractor"] = r.random() < 0.1
        # Most users have a manager among the earlier, never-deleted users; added users have none.
        u["manager"] = None
        if 0 < i < self.users and i % 10:
            j = self.stable_user(r) % i
            u["manager"] = j - 1 if self.r3b_deleted(j) else j
        return u

    def group(self, g):
        """Group g: its user members (indexes) and, when nested, the group it contains."""
        r = self.rng("group", g)
        gid = str(uuid.UUID(bytes=r.randbytes(16), version=4))
        if g < self.big_groups:
            # big_size distinct users that no change set deletes (a 2.5% margin covers the 1/85
            # deleted ones)
            pool = r.sample(range(self.users), self.big_size + self.big_size // 40)
            members = sorted([j for j in pool if not self.r3b_deleted(j)][: self.big_size])
        else:
            members = sorted({self.stable_user(r) for _ in range(r.randrange(5, 16))})
        inner = g - 1 if self.nested and g % 50 in (1, 2, 3, 4) and g - 1 >= self.big_groups else None
        return {"g": g, "uuid": gid, "cn": f"group{g:06d}", "members": members, "group_member": inner}

    def group_uuid(self, g):
        return str(uuid.UUID(bytes=self.rng("group", g).randbytes(16), version=4))

    def group_dn(self, g):
        return f"cn=group{g:06d},ou=groups,{self.base}"

    def member_count(self, g):
        gr = self.group(g)
        return len(gr["members"]) + (gr["group_member"] is not None)

    def user_uuid(self, i):
        return str(uuid.UUID(bytes=self.rng("user", i).randbytes(16), version=4))

    def user_dn(self, i):
        return f"uid=u{i:07d},ou=people,{self.base}"


def ldif_line(out, attr, value):
    """An attribute line, base64 when RFC 2849 requires it."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    safe = raw and all(32 <= b < 127 for b in raw) and raw[:1] not in (b" ", b":", b"<") and raw[-1:] != b" "
    if safe:
        out.append(f"{attr}: {raw.decode('ascii')}")
    else:
        out.append(f"{attr}:: {base64.b64encode(raw).decode('ascii')}")


def openldap_user(p, u, with_uuid=True):
    out = [f"dn: {u['dn']}", "objectClass: inetOrgPerson"]
    if with_uuid:
        out.append(f"entryUUID: {u['uuid']}")
    out += [
        f"uid: {u['uid']}", f"cn: {u['first']} {u['last']} {u['i']}", f"sn: {u['last']}",
        f"givenName: {u['first']}", f"displayName: {u['first']} {u['last']}", f"mail: {u['mail']}",
        f"title: {u['title']}", f"departmentNumber: {u['dept']}", "o: Example Corp",
        f"telephoneNumber: {u['phone']}", f"mobile: {u['mobile']}", f"employeeNumber: {100000 + u['i']}",
        f"employeeType: {'contractor' if u['contractor'] else 'employee'}",
    ]
    if u["manager"] is not None:
        out.append(f"manager: {p.user_dn(u['manager'])}")
    return out


def write_openldap(p, path):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        w = f.write
        w(f"dn: {p.base}\nobjectClass: organizationalUnit\nou: {p.base.split(',')[0][3:]}\n\n")
        for ou in ("people", "groups", "contacts"):
            w(f"dn: ou={ou},{p.base}\nobjectClass: organizationalUnit\nou: {ou}\n\n")
        for i in range(p.users):
            w("\n".join(openldap_user(p, p.user(i, 0))) + "\n\n")
        for g in range(p.groups):
            gr = p.group(g)
            out = [f"dn: cn={gr['cn']},ou=groups,{p.base}", "objectClass: groupOfNames",
                   f"entryUUID: {gr['uuid']}", f"cn: {gr['cn']}"]
            out += [f"member: {p.user_dn(m)}" for m in gr["members"]]
            if gr["group_member"] is not None:
                out.append(f"member: {p.group_dn(gr['group_member'])}")
            w("\n".join(out) + "\n\n")
        for c in range(p.contacts):
            r = p.rng("contact", c)
            cid = str(uuid.UUID(bytes=r.randbytes(16), version=4))
            w(f"dn: cn=contact{c:06d},ou=contacts,{p.base}\nobjectClass: organizationalPerson\n"
              f"entryUUID: {cid}\ncn: contact{c:06d}\nsn: Partner {c}\n\n")


def write_ad(p, path):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        w = f.write
        w(f"# generated by bench/gen_bench.py {p.count} --seed {p.seed}\n\n")
        for i in range(p.users):
            u = p.user(i, 0)
            sam = u["uid"]
            upn, given, proxies = u["mail"], u["first"], [f"SMTP:{u['mail']}", f"smtp:{sam}@{VERIFIED}"]
            # About 4% of the users carry one defect the readiness report looks for (R6 has work
            # to do); the AD export is not synchronized by the cycle runs, so the oracle ignores it.
            d = p.rng("defect", i).random()
            if d < 0.005:
                upn = f"{u['first'].lower()} {u['last'].lower()}{i}@{VERIFIED}"
            elif d < 0.010:
                upn = f"{u['first'].lower()},{u['last'].lower()}{i}@{VERIFIED}"
            elif d < 0.015:
                upn = f"{u['local']}@corp.local"
            elif d < 0.020:
                upn = f"{u['first'].lower()}\u00e4{i}@{VERIFIED}"
            elif d < 0.025:
                upn = None
            elif d < 0.030 and i > 0:
                proxies.append(f"smtp:u{i - 1:07d}@{VERIFIED}")
            elif d < 0.035:
                given = u["first"] * 14
            elif d < 0.040:
                proxies.append("X500:/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=" + sam)
            out = [f"dn: {u['ad_dn']}"]
            for oc in ("top", "person", "organizationalPerson", "user"):
                ldif_line(out, "objectClass", oc)
            ldif_line(out, "cn", u["uid"])
            ldif_line(out, "objectGUID", uuid.UUID(u["uuid"]).bytes_le)
            ldif_line(out, "sAMAccountName", sam)
            if upn is not None:
                ldif_line(out, "userPrincipalName", upn)
            for proxy in proxies:
                ldif_line(out, "proxyAddresses", proxy)
            for attr, value in (
                ("displayName", f"{u['first']} {u['last']}"), ("givenName", given), ("sn", u["last"]),
                ("mail", u["mail"]), ("department", u["dept"]), ("title", u["title"]), ("company", "Example Corp"),
                ("telephoneNumber", u["phone"]), ("mobile", u["mobile"]), ("employeeID", str(100000 + i)),
                ("employeeType", "contractor" if u["contractor"] else "employee"),
                ("userAccountControl", "512"), ("whenCreated", f"2024{1 + i % 12:02d}{1 + i % 28:02d}120000.0Z"),
            ):
                ldif_line(out, attr, value)
            if u["manager"] is not None:
                ldif_line(out, "manager", f"CN=u{u['manager']:07d},OU=People,OU=bench,{AD_BASE}")
            w("\n".join(out) + "\n\n")
        for g in range(p.groups):
            gr = p.group(g)
            out = [f"dn: CN={gr['cn']},OU=Groups,OU=bench,{AD_BASE}"]
            for oc in ("top", "group"):
                ldif_line(out, "objectClass", oc)
            ldif_line(out, "cn", gr["cn"])
            ldif_line(out, "objectGUID", uuid.UUID(gr["uuid"]).bytes_le)
            ldif_line(out, "sAMAccountName", gr["cn"])
            ldif_line(out, "groupType", "-2147483646")
            for m in gr["members"]:
                ldif_line(out, "member", f"CN=u{m:07d},OU=People,OU=bench,{AD_BASE}")
            if gr["group_member"] is not None:
                ldif_line(out, "member", f"CN=group{gr['group_member']:06d},OU=Groups,OU=bench,{AD_BASE}")
            w("\n".join(out) + "\n\n")
        for c in range(p.contacts):
            r = p.rng("contact", c)
            cid = uuid.UUID(bytes=r.randbytes(16), version=4)
            out = [f"dn: CN=contact{c:06d},OU=Contacts,OU=bench,{AD_BASE}"]
            for oc in ("top", "person", "organizationalPerson", "contact"):
                ldif_line(out, "objectClass", oc)
            ldif_line(out, "cn", f"contact{c:06d}")
            ldif_line(out, "objectGUID", cid.bytes_le)
            ldif_line(out, "mail", f"partner{c}@fabrikam.com")
            ldif_line(out, "targetAddress", f"SMTP:partner{c}@fabrikam.com")
            ldif_line(out, "proxyAddresses", f"SMTP:partner{c}@fabrikam.com")
            w("\n".join(out) + "\n\n")


def write_change_r3(p, path):
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(p.users):
            if p.r3_modified(i):
                u = p.user(i, 1)
                f.write(f"dn: {u['dn']}\nchangetype: modify\nreplace: title\ntitle: {u['title']}\n-\n\n")
                n += 1
    return n


def write_change_r3b(p, path):
    added = deleted = modified = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(p.users):
            if p.r3b_deleted(i):
                f.write(f"dn: {p.user_dn(i)}\nchangetype: delete\n\n")
                deleted += 1
            elif p.r3b_modified(i):
                u = p.user(i, 2)
                f.write(f"dn: {u['dn']}\nchangetype: modify\nreplace: title\ntitle: {u['title']}\n-\n\n")
                modified += 1
        for i in range(p.users, p.users + p.added):
            lines = openldap_user(p, p.user(i, 2))
            f.write("\n".join([lines[0], "changetype: add"] + lines[1:]) + "\n\n")
            added += 1
    return added, deleted, modified


def write_oracle(p, phase, path):
    """The expected cloud state, streamed: {"groups": [...], "users": [...]}, keys sorted."""
    dump = lambda o: json.dumps(o, sort_keys=True, ensure_ascii=False)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write('{"groups": [\n')
        for g in range(p.groups):
            gr = p.group(g)
            members = [p.user_uuid(m) for m in gr["members"]]
            if gr["group_member"] is not None:
                members.append(p.group_uuid(gr["group_member"]))
            o = {"displayName": gr["cn"], "onPremisesImmutableId": gr["uuid"], "members": sorted(members)}
            f.write(("" if g == 0 else ",\n") + dump(o))
        f.write('\n],\n"users": [\n')
        first = True
        for i in range(p.users + p.added):
            u = p.user(i, phase)
            if u is None:
                continue
            o = {"displayName": f"{u['first']} {u['last']}", "jobTitle": u["title"],
                 "onPremisesImmutableId": u["uuid"], "userPrincipalName": u["upn_cloud"]}
            f.write(("" if first else ",\n") + dump(o))
            first = False
        f.write("\n]}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("size", help="S, M, L or a number of objects")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--suffix", default="dc=example,dc=com")
    ap.add_argument("--tenant", default="contoso.onmicrosoft.com")
    a = ap.parse_args()
    count = SIZES.get(a.size.upper()) or int(a.size)
    if count < 100:
        sys.exit("gen_bench.py: at least 100 objects")
    tag = a.size.upper() if a.size.upper() in SIZES else str(count)
    p = Plan(count, a.seed, a.suffix, a.tenant, tag)
    os.makedirs(a.out_dir, exist_ok=True)
    o = lambda name: os.path.join(a.out_dir, name)
    write_openldap(p, o("openldap.ldif"))
    write_ad(p, o("ad.ldif"))
    r3 = write_change_r3(p, o("change-r3.ldif"))
    added, deleted, modified = write_change_r3b(p, o("change-r3b.ldif"))
    for phase, name in ((0, "oracle-base.json"), (1, "oracle-r3.json"), (2, "oracle-r3b.json")):
        write_oracle(p, phase, o(name))
    with_manager = sum(1 for i in range(p.users) if 0 < i and i % 10)
    member_counts = [p.member_count(g) for g in range(p.groups)]
    # Graph binds at most 20 members in one request: a group of n > 20 members costs its POST
    # (with 20) and one PATCH per further 20.
    member_patches = sum((n - 20 + 19) // 20 for n in member_counts if n > 20)
    manifest = {
        "generator": "bench/gen_bench.py", "seed": a.seed, "count": count, "tag": tag,
        "base": p.base, "tenant": a.tenant, "verified_domains": [VERIFIED],
        "users": p.users, "groups": p.groups, "contacts": p.contacts,
        "users_with_manager": with_manager,
        "group_members": sum(member_counts), "largest_group": max(member_counts, default=0),
        "big_groups": p.big_groups, "nested_groups": sum(1 for g in range(p.groups) if p.group(g)["group_member"] is not None),
        "changes": {"r3_modified": r3, "r3b_added": added, "r3b_deleted": deleted, "r3b_modified": modified},
        # The fewest Graph writes that reach the oracle: one POST per object (a group's first 20
        # members bound at creation with members@odata.bind), one PATCH per further 20 members,
        # one PATCH per modified user, one DELETE per deleted one. (Managers are not in the
        # oracle: each would cost one more write, PUT /users/{id}/manager/$ref.)
        "minimum_writes": {
            "R1": p.users + p.groups + member_patches,
            "R2": 0, "R3": r3, "R3b": added + deleted + modified, "R4": 0,
        },
    }
    with open(o("manifest.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
