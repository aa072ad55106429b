#!/usr/bin/env bash
# Stop every syncctl test peer that is running (their data dirs are kept).
# Usage: tests/peers/stop-all.sh [samba|slapd|smtp]...   (default: all peers)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER_NAME="stop-all"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=(samba slapd smtp)

rc=0
for peer in "${peers[@]}"; do
    case $peer in
        samba | samba-ad) "$SCRIPT_DIR/samba-ad.sh" stop || rc=1 ;;
        slapd) "$SCRIPT_DIR/slapd.sh" stop || rc=1 ;;
        smtp) "$SCRIPT_DIR/smtp.sh" stop || rc=1 ;;
        *) die "unknown peer '$peer' (known: samba, slapd, smtp)" ;;
    esac
done
exit "$rc"
