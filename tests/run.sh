#!/usr/bin/env bash
# Runs every test of the workspace, the end-to-end tests against real peers included:
#   1. starts the Samba AD DC, OpenLDAP and the SMTP server (aiosmtpd) once, through
#      tests/peers/start-all.sh (which installs their Debian packages on first use and is a
#      no-op for a peer already running);
#   2. installs headless Chromium for the HTML report's browser test, through
#      tests/peers/chromium.sh (Debian's chromium package, only when /usr/bin/chromium is missing);
#   3. sources the peers' env.sh (the SYNCCTL_TEST_* addresses and credentials); the end-to-end
#      tests fail (never skip) when a peer's variables are missing;
#   4. runs `cargo test --workspace --all-targets` (or `cargo test ARGS...` when given ARGS).
#      The full-cycle tests (tests/e2e/cloud.rs) need the Samba DC and no other server: each
#      starts its own Microsoft Graph emulator (crates/graph-emulator) inside the test process,
#      and runs the syncctl binary this build makes.
#
# Usage: bash tests/run.sh                                   everything
#        bash tests/run.sh -p syncctl-tests --test e2e sample   one test (cargo test ARGS)
#
# Needs root (Samba binds 389/636, packages come from apt-get) and a Rust toolchain >= 1.89,
# which is assumed to be installed (this script does not install Rust).
#
# Environment:
#   SYNCCTL_PEERS_DIR     the peers' state (default /tmp/syncctl-peers)
#   SYNCCTL_STOP_PEERS=1  stop the peers afterwards (default: leave them running; they are
#                         shared and idempotent, so the next run starts in a second)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PEER_NAME=tests
# log, die, ensure_packages, PEERS_DIR
# shellcheck source=tests/peers/lib.sh
. "$ROOT/tests/peers/lib.sh"

if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain >= 1.89 first"
# SQLite (bundled) and ring are built from C.
command -v cc >/dev/null 2>&1 || ensure_packages gcc libc6-dev

if [[ ${SYNCCTL_STOP_PEERS:-0} == 1 ]]; then
    trap '"$ROOT/tests/peers/stop-all.sh" || true' EXIT
fi

t0=$(now_ms)
log "starting the test peers (tests/peers/start-all.sh)"
if ! "$ROOT/tests/peers/start-all.sh" >/dev/null; then
    die "a test peer could not start (see the messages above): the tests need the Samba AD DC, OpenLDAP and the SMTP server"
fi
[[ -s $PEERS_DIR/env.sh ]] || die "tests/peers/start-all.sh wrote no $PEERS_DIR/env.sh"
# shellcheck source=/dev/null
. "$PEERS_DIR/env.sh"
log "peers ready in $(elapsed_s "$t0") s ($PEERS_DIR/env.sh)"

if ! "$ROOT/tests/peers/chromium.sh"; then
    die "headless Chromium could not be installed (see the messages above): the HTML report's browser test needs it"
fi

# One TLS stack: rustls with ring. A second crypto provider (aws-lc-rs) makes rustls panic at the
# first connection, and native-tls would need OpenSSL.
if cargo tree --workspace -e normal --prefix none 2>/dev/null | grep -qE '^(aws-lc-rs|aws-lc-sys|native-tls|openssl-sys) '; then
    die "a second TLS stack is in the dependency tree (aws-lc-rs, native-tls or openssl-sys): use rustls with ring only"
fi

if [[ $# -gt 0 ]]; then
    # The end-to-end tests run the CLI binary: make sure it is the current one.
    cargo build -p syncctl
    cargo test "$@"
else
    cargo test --workspace --all-targets
    # The benchmark's own tooling: a deterministic generator and an oracle check that can fail.
    bash "$ROOT/bench/test-bench.sh"
fi
