#!/usr/bin/env bash
# SMTP test peer for syncctl: an aiosmtpd server (Debian's python3-aiosmtpd, run by
# tests/peers/smtp_sink.py) on 127.0.0.1 that requires STARTTLS and then AUTH PLAIN or LOGIN,
# with a second listener for implicit TLS, and stores every message it accepts as a file.
#
# Usage: tests/peers/smtp.sh {start|stop|restart|status|env|clear|check}
#   start    install packages if missing, make the CA and server certificate and the relay
#            account's password (once), start the server, print the env exports
#            (a no-op that prints the exports when it already runs in the same mode)
#   stop     stop the server (SIGTERM, SIGKILL after 10 s)
#   restart  stop + start
#   status   exit 0 and say so if the server is running, exit 3 otherwise
#   env      print `export SYNCCTL_TEST_SMTP_...=...` lines for tests (eval-able)
#   clear    delete the stored messages
#   check    send one message with swaks over STARTTLS (AUTH LOGIN) and one over implicit TLS
#            (AUTH PLAIN), both verifying the certificate, and find them stored
#
# Environment:
#   SYNCCTL_PEERS_DIR       state root (default /tmp/syncctl-peers)
#   SYNCCTL_SMTP_DIR        data dir of this server (default $SYNCCTL_PEERS_DIR/smtp)
#   SYNCCTL_SMTP_PORT       submission port with STARTTLS (default 2525)
#   SYNCCTL_SMTP_TLS_PORT   implicit-TLS port (default 2465)
#   SYNCCTL_SMTP_MODE       starttls (default): STARTTLS required, then AUTH;
#                           notls: STARTTLS not offered (AUTH in the clear), no TLS listener;
#                           reject: as starttls, but every recipient gets `550 5.7.1`
#   SYNCCTL_SMTP_DELAY_MS   wait this long before storing and answering each message's DATA
#                           (default 0), so that tests can stop the server mid-delivery
#
# Messages: $D/mail/new/<n>.eml (the DATA as received) with <n>.json beside it (envelope, AUTH
# user, TLS, port). The account is relay@corp.example.com; its password is generated once
# into $D/smtp.password (mode 600). Starting again in another mode, with another delay or
# after smtp_sink.py changed restarts the server (same certificate, password and messages).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER_NAME=smtp
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

D=${SYNCCTL_SMTP_DIR:-$PEERS_DIR/smtp}
D=${D%/}

HOST=127.0.0.1
PORT=${SYNCCTL_SMTP_PORT:-2525}
TLS_PORT=${SYNCCTL_SMTP_TLS_PORT:-2465}
MODE=${SYNCCTL_SMTP_MODE:-starttls}
DELAY_MS=${SYNCCTL_SMTP_DELAY_MS:-0}
USER_NAME=relay@corp.example.com
START_TIMEOUT=20
STOP_TIMEOUT=10

PIDFILE=$D/run/smtp.pid
STATEFILE=$D/run/state
LOGFILE=$D/log/smtp.log
TLS_DIR=$D/tls
PW_FILE=$D/smtp.password
MAILDIR=$D/mail
# Debian's interpreter: a pyenv python3 on PATH has no aiosmtpd.
PYTHON=/usr/bin/python3

PACKAGES=(python3-aiosmtpd swaks libnet-ssleay-perl openssl)

case $MODE in
    starttls | notls | reject) ;;
    *) die "SYNCCTL_SMTP_MODE must be starttls, notls or reject, not '$MODE'" ;;
esac
[[ $DELAY_MS =~ ^[0-9]+$ ]] || die "SYNCCTL_SMTP_DELAY_MS must be a number of milliseconds"

running_pid() { pid_from_file "$PIDFILE" python3; }

# What a running server must match to be kept: mode, ports, delay, and the sink's code.
wanted_state() {
    printf '%s %s %s %s %s\n' "$MODE" "$PORT" "$TLS_PORT" "$DELAY_MS" \
        "$(sha256sum "$SCRIPT_DIR/smtp_sink.py" | cut -c1-12)"
}

prepare() {
    mkdir -p "$D/run" "$D/log" "$MAILDIR/tmp" "$MAILDIR/new"
    make_ca "$TLS_DIR"
    if [[ ! -s $PW_FILE ]]; then
        write_secret "$PW_FILE" "$(openssl rand -hex 18)"
        log "generated the relay account's password in $PW_FILE"
    fi
    chmod 600 "$PW_FILE"
}

start_daemon() {
    local pid
    if pid=$(running_pid); then
        if [[ $(cat "$STATEFILE" 2>/dev/null) == "$(wanted_state)" ]] &&
            wait_port "$HOST" "$PORT" "$START_TIMEOUT" "$pid"; then
            log "already running (pid $pid, mode $MODE)"
            return 0
        fi
        log "running as '$(cat "$STATEFILE" 2>/dev/null)', wanted '$(wanted_state)': restarting"
        stop_pidfile "$PIDFILE" python3 TERM "$STOP_TIMEOUT"
    fi
    local p ports=("$PORT")
    [[ $MODE == notls ]] || ports+=("$TLS_PORT")
    for p in "${ports[@]}"; do
        if port_open "$HOST" "$p"; then
            die "$HOST:$p is already in use by another process (ss -ltnp 'sport = :$p')"
        fi
    done
    prepare
    rm -f "$PIDFILE"
    local t0
    t0=$(now_ms)
    printf '\n=== %s smtp start: %s\n' "$(date -u +%FT%TZ)" "$(wanted_state)" >>"$LOGFILE"
    # setsid detaches it from our session; 9>&- keeps the lock of take_lock out of the daemon.
    setsid "$PYTHON" "$SCRIPT_DIR/smtp_sink.py" "$D" "$PORT" "$TLS_PORT" "$MODE" "$DELAY_MS" \
        "$USER_NAME" "$PW_FILE" </dev/null >>"$LOGFILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"
    wanted_state >"$STATEFILE"
    for p in "${ports[@]}"; do
        if ! wait_port "$HOST" "$p" "$START_TIMEOUT" "$pid"; then
            tail_log "$LOGFILE"
            stop_pidfile "$PIDFILE" python3 TERM "$STOP_TIMEOUT"
            die "the SMTP server did not answer on $HOST:$p within ${START_TIMEOUT}s"
        fi
    done
    log "started (pid $pid, mode $MODE, $HOST:$PORT$([[ $MODE == notls ]] || echo ", implicit TLS $HOST:$TLS_PORT")) in $(elapsed_s "$t0") s"
}

print_env() {
    print_export SYNCCTL_TEST_SMTP_HOST "$HOST"
    print_export SYNCCTL_TEST_SMTP_PORT "$PORT"
    print_export SYNCCTL_TEST_SMTP_TLS_PORT "$TLS_PORT"
    print_export SYNCCTL_TEST_SMTP_USER "$USER_NAME"
    print_export SYNCCTL_TEST_SMTP_PASSWORD_FILE "$PW_FILE"
    print_export SYNCCTL_TEST_SMTP_CA "$TLS_DIR/ca.pem"
    print_export SYNCCTL_TEST_SMTP_MAILDIR "$MAILDIR/new"
}

cmd_start() {
    ensure_packages "${PACKAGES[@]}"
    assert_safe_dir "$D"
    start_daemon
    print_env
}

cmd_stop() { stop_peer "$PIDFILE" python3 TERM "$STOP_TIMEOUT"; }

cmd_status() {
    local pid
    if pid=$(running_pid); then
        local s="running (pid $pid, $(cat "$STATEFILE" 2>/dev/null), data dir $D)"
        if port_open "$HOST" "$PORT"; then s+=", $PORT open"; else s+=", $PORT CLOSED"; fi
        echo "smtp: $s"
        return 0
    fi
    echo "smtp: stopped"
    return 3
}

cmd_clear() {
    assert_safe_dir "$D"
    rm -f "$MAILDIR"/new/* "$MAILDIR"/tmp/*
    log "stored messages deleted"
}

# count_with TEXT : how many stored messages contain TEXT.
count_with() {
    local n=0 f
    for f in "$MAILDIR"/new/*.eml; do
        [[ -f $f ]] && grep -q -- "$1" "$f" && n=$((n + 1))
    done
    echo "$n"
}

cmd_check() {
    running_pid >/dev/null || die "not running"
    local token before after
    token="check-$(date +%s%N)"
    before=$(count_with "$token")
    swaks --silent 2 --server "$HOST" --port "$PORT" --from relay@corp.example.com --to check@corp.example.com \
        --header "Subject: $token starttls" -tls --tls-verify --tls-ca-path "$TLS_DIR/ca.pem" \
        --auth LOGIN --auth-user "$USER_NAME" --auth-password "$(cat "$PW_FILE")" >&2 ||
        die "swaks over STARTTLS with AUTH LOGIN failed"
    log "ok: STARTTLS on $HOST:$PORT, certificate verified, AUTH LOGIN, message accepted"
    if [[ $MODE != notls ]]; then
        swaks --silent 2 --server "$HOST" --port "$TLS_PORT" --from relay@corp.example.com \
            --to check@corp.example.com --header "Subject: $token implicit" --tlsc --tls-verify \
            --tls-ca-path "$TLS_DIR/ca.pem" --auth PLAIN --auth-user "$USER_NAME" \
            --auth-password "$(cat "$PW_FILE")" >&2 || die "swaks over implicit TLS with AUTH PLAIN failed"
        log "ok: implicit TLS on $HOST:$TLS_PORT, certificate verified, AUTH PLAIN, message accepted"
    fi
    after=$(count_with "$token")
    [[ $after -gt $before ]] || die "the messages were accepted but not stored in $MAILDIR/new"
    log "ok: $((after - before)) message(s) stored in $MAILDIR/new"
}

main() {
    local cmd=${1:-}
    case $cmd in
        start | stop | restart | clear)
            take_lock "$D.lock"
            ;;
    esac
    case $cmd in
        start) cmd_start ;;
        stop) cmd_stop ;;
        restart)
            cmd_stop
            cmd_start
            ;;
        status) cmd_status ;;
        env) print_env ;;
        clear) cmd_clear ;;
        check) cmd_check ;;
        *)
            echo "usage: $0 {start|stop|restart|status|env|clear|check}" >&2
            exit 2
            ;;
    esac
}

main "$@"
