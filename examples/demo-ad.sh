#!/usr/bin/env bash
# syncctl demo against a real directory: a Samba AD DC on loopback, the sample objects of examples/ad-sample.ldif,
# a full import, a delta import, a sync into the metaverse, run history, one object as the
# connector space and the metaverse hold it, and the readiness report (syncctl assess) of the
# same directory against a sample tenant.
#
# Usage: bash examples/demo-ad.sh   (from anywhere; as root, on Debian 12; idempotent, run it as
#        often as you like). ./demo.sh is the demo with no server at all (`syncctl demo`).
#
# Needs: root (Samba binds 389/636 and is installed with apt-get), a Rust toolchain >= 1.89
# (cargo on PATH or in ~/.cargo/bin). Everything else comes from Debian's packages and crates.io.
#
# Environment:
#   SYNCCTL_DEMO_DIR   where the demo's config and database go (default /tmp/syncctl-demo-ad)
#   SYNCCTL_PEERS_DIR  where the Samba DC keeps its state (default /tmp/syncctl-peers)
set -euo pipefail

# The repository root (this script lives in examples/).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PEER_NAME=demo
# log, die, ensure_packages
# shellcheck source=tests/peers/lib.sh
. "$ROOT/tests/peers/lib.sh"

DEMO_DIR=${SYNCCTL_DEMO_DIR:-/tmp/syncctl-demo-ad}
DEMO_DIR=${DEMO_DIR%/}
CONFIG=$DEMO_DIR/syncctl.toml
SAMPLE=$ROOT/examples/ad-sample.ldif
USERS_DN=CN=Users,DC=corp,DC=example,DC=com
ALICE_DN="CN=Alice Anders,$USERS_DN"

if [[ -t 1 ]]; then
    step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
    step() { printf '\n==> %s\n' "$*"; }
fi

# ---------------------------------------------------------------------------------------------
# Tools: cargo (assumed installed, checked here), a C compiler (SQLite and ring build C code).

if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install a Rust toolchain >= 1.89 (rustup, https://rustup.rs), then run examples/demo-ad.sh again"
rust_version=$(rustc --version | awk '{print $2}')
IFS=. read -r rust_major rust_minor _ <<<"$rust_version"
if ((rust_major < 1 || (rust_major == 1 && rust_minor < 89))); then
    die "rustc $rust_version is too old: syncctl needs Rust >= 1.89 (edition 2024, let chains, File::try_lock); try 'rustup update'"
fi
command -v cc >/dev/null 2>&1 || ensure_packages gcc libc6-dev

# ---------------------------------------------------------------------------------------------
step "Starting the Samba AD DC (tests/peers/samba-ad.sh start: installs and provisions it on first use)"

exports=$("$ROOT/tests/peers/samba-ad.sh" start) || die "the Samba AD DC did not start (see the messages above)"
eval "$exports"
: "${SYNCCTL_TEST_SAMBA_PASSWORD_FILE:?samba-ad.sh did not export the password file}"
: "${SYNCCTL_TEST_SAMBA_CA:?samba-ad.sh did not export the CA file}"
ldap_auth=(-x -H ldap://127.0.0.1 -D Administrator@corp.example.com -y "$SYNCCTL_TEST_SAMBA_PASSWORD_FILE")

# ---------------------------------------------------------------------------------------------
step "Loading the sample objects ($(basename "$SAMPLE")) into $USERS_DN"

# dn_exists DN : true if the DC has an object with that DN.
dn_exists() {
    ldapsearch "${ldap_auth[@]}" -LLL -s base -b "$1" 1.1 >/dev/null 2>&1
}

# attr_value FILE NAME : the first value of NAME in a one-entry LDIF file (base64 decoded).
attr_value() {
    local line
    line=$(grep -m1 -i "^$2::\? " "$1" || true)
    case $line in
        *":: "*) printf '%s' "${line#*:: }" | base64 -d ;;
        *": "*) printf '%s' "${line#*: }" ;;
    esac
}

# clear_conflicts FILE DN : delete objects elsewhere in the domain that hold this entry's
# sAMAccountName or userPrincipalName (Samba keeps both unique): leftovers of test runs.
clear_conflicts() {
    local file=$1 dn=$2 sam upn filter holders holder
    sam=$(attr_value "$file" sAMAccountName)
    upn=$(attr_value "$file" userPrincipalName)
    filter="(|(sAMAccountName=${sam:-\\00})(userPrincipalName=${upn:-\\00}))"
    holders=$(ldapsearch "${ldap_auth[@]}" -LLL -o ldif-wrap=no -b DC=corp,DC=example,DC=com "$filter" 1.1 |
        sed -n 's/^dn: //p')
    while IFS= read -r holder; do
        [[ -n $holder && ${holder,,} != "${dn,,}" ]] || continue
        log "removing $holder: it holds the sAMAccountName or UPN of $dn (left by an earlier test run)"
        ldapdelete "${ldap_auth[@]}" "$holder" >&2
    done <<<"$holders"
}

entries=$(mktemp -d)
trap 'rm -rf "$entries"' EXIT
# One file per entry, comments dropped, in file order (groups after their members).
awk -v dir="$entries" '
    /^#/ { next }
    /^[[:space:]]*$/ { if (f != "") { close(f); f = "" } next }
    { if (f == "") { n++; f = sprintf("%s/%03d.ldif", dir, n) } print > f }
' "$SAMPLE"

added=0 present=0
for file in "$entries"/*.ldif; do
    dn=$(sed -n 's/^dn: //p' "$file" | head -n 1)
    for attempt in 1 2; do
        rc=0
        out=$(ldapadd "${ldap_auth[@]}" -f "$file" 2>&1) || rc=$?
        if [[ $rc -eq 0 ]]; then
            added=$((added + 1))
            break
        fi
        # 68 entryAlreadyExists: this DN is there from an earlier demo (or its account name is
        # taken elsewhere, then the DN is missing). 19 constraintViolation: the UPN is taken.
        if [[ $rc -eq 68 ]] && dn_exists "$dn"; then
            present=$((present + 1))
            break
        fi
        if [[ $attempt -eq 1 && ($rc -eq 68 || $rc -eq 19) ]]; then
            clear_conflicts "$file" "$dn"
            continue
        fi
        printf '%s\n' "$out" >&2
        die "ldapadd of $dn failed (rc $rc)"
    done
done
log "sample loaded: $added added, $present already there"

# ---------------------------------------------------------------------------------------------
step "Writing $CONFIG"

toml_str() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }
mkdir -p "$DEMO_DIR"
# Each demo starts from an empty database, so that it shows a first full import (and a database
# left by another version of syncctl cannot get in the way).
rm -f "$DEMO_DIR/syncctl.db" "$DEMO_DIR/syncctl.db-wal" "$DEMO_DIR/syncctl.db-shm"
(
    umask 077
    cat >"$CONFIG.tmp" <<EOF
# Written by examples/demo-ad.sh. See examples/syncctl.toml for every key.
[store]
path = "syncctl.db"

[[connectors]]
name = "corp-ad"
type = "ldap"
flavor = "ad"
url = "ldaps://127.0.0.1:636"
ca_file = $(toml_str "$SYNCCTL_TEST_SAMBA_CA")
bind_dn = "Administrator@corp.example.com"
password_file = $(toml_str "$SYNCCTL_TEST_SAMBA_PASSWORD_FILE")
base_dn = "DC=corp,DC=example,DC=com"
# The sample lives in CN=Users; the test suite's objects elsewhere in this DC stay out of scope.
include_ous = ["$USERS_DN"]

# Notification mail: syncctl assess checks the sender against Office 365's relay rules.
[mail]
sender = "syncctl@corp.example.com"

[mail.smtp]
host = "smtp.office365.com"
port = 587
security = "starttls"
username = "svc-mail@corp.example.com"
password_env = "SYNCCTL_SMTP_PASSWORD"
EOF
)
mv -f "$CONFIG.tmp" "$CONFIG"
sed 's/^/    /' "$CONFIG"

# ---------------------------------------------------------------------------------------------
step "Building syncctl (cargo build --release -p syncctl)"

cargo build --release -p syncctl
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/syncctl
[[ -x $BIN ]] || die "the build did not produce $BIN"

export SYNCCTL_CONFIG=$CONFIG

# syncctl ARGS... : show the command, run it.
syncctl() {
    local arg shown=""
    for arg in "$@"; do
        if [[ $arg == *[[:space:]]* ]]; then shown+=" '$arg'"; else shown+=" $arg"; fi
    done
    printf '\n$ syncctl%s\n' "$shown"
    "$BIN" "$@"
}

# import_run ARGS... : exit 0 (success) and 1 (completed with per-object errors) go on.
import_run() {
    local rc=0
    syncctl import "$@" || rc=$?
    case $rc in
        0) ;;
        1) log "the import completed with per-object errors (syncctl runs --errors RUN_ID lists them)" ;;
        *) die "syncctl import $* failed with exit code $rc" ;;
    esac
}

step "Full import: every object in scope, diffed against the connector space"
import_run --connector corp-ad --full

step "Changing Alice's title in the directory, then a delta import (DirSync) finds just that"
title="syncctl demo $(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldapmodify "${ldap_auth[@]}" >/dev/null <<EOF
dn: $ALICE_DN
changetype: modify
replace: title
title: $title
EOF
import_run --connector corp-ad --delta

step "Sync: the connector space into the metaverse (join on the ImmutableID, else project), rules from schema/sync-rules.toml"
sync_rc=0
syncctl sync || sync_rc=$?
case $sync_rc in
    0) ;;
    1) log "the sync completed with per-object errors (syncctl runs --errors RUN_ID lists them)" ;;
    *) die "syncctl sync failed with exit code $sync_rc" ;;
esac

step "Run history"
syncctl runs --limit 5

step "One object: as the connector space holds it, and its metaverse object explained"
syncctl show "$ALICE_DN"

step "Readiness report: the same directory against a sample tenant (examples/tenant.json)"
assess_rc=0
syncctl assess --connector corp-ad --tenant "$ROOT/examples/tenant.json" --html "$DEMO_DIR/assess.html" \
    --csv "$DEMO_DIR/assess.csv" --fix-ldif "$DEMO_DIR/assess-fix.ldif" || assess_rc=$?
case $assess_rc in
    0 | 1 | 2) log "assess exit $assess_rc (0 ready, 1 warnings only, 2 blocking errors: the sample has errors on purpose)" ;;
    *) die "syncctl assess failed with exit code $assess_rc" ;;
esac

cat <<EOF

Done. Try it yourself:
    export SYNCCTL_CONFIG=$CONFIG
    $BIN runs --json
    $BIN show 'CN=Bob Brown,$USERS_DN'
    $BIN import --connector corp-ad --delta && $BIN sync
    $BIN export --preview
    $BIN assess --rules
The readiness report is in $DEMO_DIR/assess.html (one self-contained page), with the findings
in IdFix's CSV columns ($DEMO_DIR/assess.csv) and the suggested fixes as LDIF for review
($DEMO_DIR/assess-fix.ldif, undo: $DEMO_DIR/assess-fix.undo.ldif).
The Samba AD DC keeps running (tests/peers/samba-ad.sh stop stops it).
EOF
