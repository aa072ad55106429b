#!/usr/bin/env python3
"""Deterministic generator of an OpenLDAP test directory for the import measurement.

Writes LDIF for `ldapadd`: one OU, N inetOrgPerson users (about 15 attributes each, most with
a manager reference) and N/100 groupOfNames of 10 members on average. The same seed gives the
same bytes.

Usage: gen_directory.py BASE_DN COUNT [SEED] > out.ldif
"""
import random
import sys

FIRST = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
         "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoe"]
LAST = ["Anders", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jones",
        "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Silva", "Tanaka"]
DEPTS = ["Sales", "Engineering", "Finance", "Legal", "Support", "Marketing", "Operations", "HR"]
TITLES = ["Engineer", "Manager", "Analyst", "Director", "Associate", "Consultant", "Specialist"]


def main() -> None:
    base = sys.argv[1]
    count = int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 42)
    out = sys.stdout
    ou = f"ou=people,{base}"
    gou = f"ou=groups,{base}"
    out.write(f"dn: {base}\nobjectClass: organizationalUnit\nou: {base.split(',')[0].split('=')[1]}\n\n")
    out.write(f"dn: {ou}\nobjectClass: organizationalUnit\nou: people\n\n")
    out.write(f"dn: {gou}\nobjectClass: organizationalUnit\nou: groups\n\n")
    dns = []
    for i in range(count):
        first = rng.choice(FIRST)
        last = rng.choice(LAST)
        uid = f"u{i:07d}"
        dn = f"uid={uid},{ou}"
        manager = dns[rng.randrange(len(dns))] if dns and i % 10 else None
        dns.append(dn)
        lines = [
            f"dn: {dn}",
            "objectClass: inetOrgPerson",
            f"uid: {uid}",
            f"cn: {first} {last} {i}",
            f"sn: {last}",
            f"givenName: {first}",
            f"displayName: {first} {last}",
            f"mail: {first.lower()}.{last.lower()}.{i}@example.com",
            f"title: {rng.choice(TITLES)}",
            f"departmentNumber: {rng.choice(DEPTS)}",
            f"o: Example Corp",
            f"telephoneNumber: +1 555 {rng.randrange(1000, 9999)}",
            f"mobile: +1 555 {rng.randrange(1000, 9999)}",
            f"employeeNumber: {100000 + i}",
            f"employeeType: {'contractor' if rng.random() < 0.1 else 'employee'}",
        ]
        if manager:
            lines.append(f"manager: {manager}")
        out.write("\n".join(lines) + "\n\n")
    for g in range(max(1, count // 100)):
        members = sorted(set(rng.choice(dns) for _ in range(rng.randrange(5, 16))))
        lines = [f"dn: cn=group{g:05d},{gou}", "objectClass: groupOfNames", f"cn: group{g:05d}"]
        lines += [f"member: {m}" for m in members]
        out.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
