#!/usr/bin/env bash
# syncctl demo: a whole sync cycle with no server to install. A sample Active Directory shipped
# as LDIF -> the SQLite metaverse -> a Microsoft Graph emulator started inside syncctl: a full
# cycle, then a day-2 delta cycle (a department removed, one user renamed) whose deletes the
# deletion threshold holds; then what happened (objects provisioned, UPNs rewritten, readiness
# findings, held deletes) and the commands to run next. It runs `syncctl demo`.
#
# Usage: ./demo.sh [--dir DIR] [--port PORT]
#   (idempotent: each run starts over in DIR, default /tmp/syncctl-demo; the emulator listens
#   on 127.0.0.1:PORT, default 18650). Any arguments go to `syncctl demo` (./demo.sh --help).
#
# Needs: a Rust toolchain >= 1.89 (cargo on PATH or in ~/.cargo/bin) and a C compiler (SQLite
# and ring build C code; installed with apt-get when missing and run as root). Nothing else:
# no directory server, no network beyond crates.io for the build.
#
# The demo against a real Samba AD DC is examples/demo-ad.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
PEER_NAME=demo
# log, die, ensure_packages
# shellcheck source=tests/peers/lib.sh
. "$ROOT/tests/peers/lib.sh"

# ---------------------------------------------------------------------------------------------
# Tools: cargo (assumed installed, checked here), a C compiler (SQLite and ring build C code).

if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install a Rust toolchain >= 1.89 (rustup, https://rustup.rs), then run ./demo.sh again"
rust_version=$(rustc --version | awk '{print $2}')
IFS=. read -r rust_major rust_minor _ <<<"$rust_version"
if ((rust_major < 1 || (rust_major == 1 && rust_minor < 89))); then
    die "rustc $rust_version is too old: syncctl needs Rust >= 1.89 (edition 2024, let chains, File::try_lock); try 'rustup update'"
fi
command -v cc >/dev/null 2>&1 || ensure_packages gcc libc6-dev

# ---------------------------------------------------------------------------------------------
log "building syncctl (cargo build --release -p syncctl)"
cargo build --release -p syncctl
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/syncctl
[[ -x $BIN ]] || die "the build did not produce $BIN"

"$BIN" demo "$@"
