#!/usr/bin/env bash
# Headless Chromium for the syncctl browser tests (the HTML report of `syncctl assess` is loaded
# with `chromium --headless --dump-dom` and `--screenshot`): installs Debian's `chromium`
# package when /usr/bin/chromium is missing, and checks that it starts.
#
# Usage: tests/peers/chromium.sh [install|check]
#   install  (default) apt-get install chromium (no recommends) if /usr/bin/chromium is missing,
#            then check; a no-op apart from the check when it is already there
#   check    exit 0 if /usr/bin/chromium runs (`--version`), exit 3 otherwise
#
# Needs root only when the package is missing. Nothing is started and nothing keeps running:
# every test runs its own chromium process with a fresh profile directory.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER_NAME=chromium
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

CHROMIUM=/usr/bin/chromium

check() {
    local version
    if [[ ! -x $CHROMIUM ]]; then
        log "$CHROMIUM is missing (run tests/peers/chromium.sh install)"
        return 3
    fi
    if ! version=$("$CHROMIUM" --headless --no-sandbox --version 2>/dev/null); then
        log "$CHROMIUM --version failed"
        return 3
    fi
    log "$version at $CHROMIUM"
}

install() {
    if [[ ! -x $CHROMIUM ]]; then
        local t0
        t0=$(now_ms)
        ensure_packages chromium
        [[ -x $CHROMIUM ]] || die "the chromium package is installed but $CHROMIUM is missing"
        log "chromium ready in $(elapsed_s "$t0") s"
    fi
    check || die "$CHROMIUM does not run"
}

case ${1:-install} in
    install) install ;;
    check) check ;;
    *) die "usage: $0 [install|check]" ;;
esac
