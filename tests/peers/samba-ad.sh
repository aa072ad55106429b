#!/usr/bin/env bash
# Samba 4 AD DC test peer for syncctl: LDAP on 127.0.0.1:389, LDAPS on 127.0.0.1:636.
#
# Usage: tests/peers/samba-ad.sh {start|stop|restart|status|env|reset|check}
#   start    install packages if missing, provision once (realm CORP.EXAMPLE.COM, domain CORP),
#            start the DC, create the non-admin account svc-nodirsync, print the env exports
#            (a no-op that prints the exports when the DC is already running)
#   stop     stop the DC (SIGTERM, SIGKILL after 10 s)
#   restart  stop + start
#   status   exit 0 and say so if the DC is running, exit 3 otherwise
#   env      print `export SYNCCTL_TEST_SAMBA_...=...` lines for tests (eval-able)
#   reset    stop, restore the pristine snapshot taken right after provisioning, start
#   check    run ldapsearch over plain LDAP, StartTLS and LDAPS, plus DirSync checks
#
# Environment:
#   SYNCCTL_PEERS_DIR  state root (default /tmp/syncctl-peers)
#   SYNCCTL_SAMBA_DIR  data dir of this DC (default $SYNCCTL_PEERS_DIR/samba)
#
# Only one Samba DC can run per network namespace: Samba's LDAP ports are fixed (389, 636,
# 3268, 3269). Needs root. Only the `ldap` server service runs (no KDC, SMB, RPC or DNS), so
# binds are simple binds (or NTLM via samba-tool with -U 'CORP\Administrator%...').
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER_NAME="samba-ad"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

D=${SYNCCTL_SAMBA_DIR:-$PEERS_DIR/samba}
D=${D%/}

REALM=CORP.EXAMPLE.COM
DNS_DOMAIN=corp.example.com
DOMAIN=CORP
BASE_DN=DC=corp,DC=example,DC=com
ADMIN_PW='Passw0rd!Admin'
ADMIN_BIND=Administrator@$DNS_DOMAIN
SVC_NAME=svc-nodirsync
SVC_PW='Svc!Passw0rd1'
SVC_DN="CN=$SVC_NAME,CN=Users,$BASE_DN"

HOST=127.0.0.1
LDAP_PORT=389
LDAPS_PORT=636
START_TIMEOUT=60
STOP_TIMEOUT=10

CONF=$D/etc/smb.conf
PIDFILE=$D/run/samba.pid
LOGFILE=$D/log/log.samba
TLS_DIR=$D/tls
ADMIN_PW_FILE=$D/admin.password
SVC_PW_FILE=$D/$SVC_NAME.password
MARKER=$D/.provisioned
SNAPSHOT=$D/pristine.tar

# samba, samba-tool (samba-common-bin, a /usr/bin/python3 script using python3-samba), the AD
# schema files (samba-ad-provision, a Recommends that --no-install-recommends would drop), the
# DSDB modules, and the OpenLDAP client tools for ldapadd/ldapsearch.
PACKAGES=(samba samba-common-bin python3-samba samba-ad-provision samba-dsdb-modules
    samba-vfs-modules ldap-utils openssl)

# samba-tool is `#!/usr/bin/python3`; keep a pyenv/virtualenv's variables away from it.
samba_tool() { env -u PYTHONHOME -u PYTHONPATH samba-tool "$@"; }

# ldap client with verification against our CA (LDAPNOINIT would also drop these variables).
ldap_cmd() { env LDAPTLS_CACERT="$TLS_DIR/ca.pem" LDAPTLS_REQCERT=demand "$@"; }

running_pid() { pid_from_file "$PIDFILE" samba; }

is_provisioned() { [[ -f $MARKER && -f $CONF && -f $SNAPSHOT ]]; }

# ensure_global_option KEY VALUE : add "KEY = VALUE" to [global] of smb.conf if KEY is absent.
ensure_global_option() {
    local key=$1 value=$2 re
    re="^[[:space:]]*${key// /[[:space:]]+}[[:space:]]*="
    grep -Eqi "$re" "$CONF" && return 0
    sed -i "/^\[global\]/a\\\t$key = $value" "$CONF"
}

provision() {
    assert_safe_dir "$D"
    if [[ -d $D ]] && [[ -n $(ls -A "$D" 2>/dev/null) ]]; then
        log "removing incomplete data dir $D"
        rm -rf "$D"
    fi
    mkdir -p "$D"
    make_ca "$TLS_DIR"

    local t0
    t0=$(now_ms)
    log "provisioning $REALM in $D"
    # An empty config file: otherwise samba-tool copies /etc/samba/smb.conf settings (shares,
    # logging, passwd program ...) into the new smb.conf.
    : >"$D/.empty.conf"
    local -a opts=(
        "netbios name=DC1"
        "interfaces=lo"
        "bind interfaces only=yes"
        # Without winbindd (package winbind) the default service set makes samba exit.
        "server services=ldap"
        "pid directory=$D/run"
        "ncalrpc dir=$D/run/ncalrpc"
        "winbindd socket directory=$D/run/winbindd"
        "ntp signd socket directory=$D/run/ntp_signd"
        "log file=$LOGFILE"
        "max log size=10000"
        # Allow a simple bind on plain 389 (tests also use StartTLS and LDAPS).
        "ldap server require strong auth=no"
        "tls enabled=yes"
        "tls keyfile=$TLS_DIR/key.pem"
        "tls certfile=$TLS_DIR/cert.pem"
        "tls cafile=$TLS_DIR/ca.pem"
    )
    local -a args=(domain provision -s "$D/.empty.conf" --realm="$REALM" --domain="$DOMAIN"
        --server-role=dc --dns-backend=NONE --host-name=dc1 --adminpass="$ADMIN_PW"
        --targetdir="$D")
    local o
    for o in "${opts[@]}"; do args+=(--option="$o"); done
    if ! samba_tool "${args[@]}" >"$D/provision.log" 2>&1; then
        tail_log "$D/provision.log"
        die "samba-tool domain provision failed"
    fi
    # samba-tool drops some --option values from the smb.conf it writes (seen: "ldap server
    # require strong auth"); add whatever is missing to [global].
    for o in "${opts[@]}"; do
        ensure_global_option "${o%%=*}" "${o#*=}"
    done
    # Passwords never expire: a data dir or snapshot older than 42 days must keep working.
    if ! samba_tool domain passwordsettings set -s "$CONF" -H "$D/private/sam.ldb" \
        --max-pwd-age=0 >>"$D/provision.log" 2>&1; then
        tail_log "$D/provision.log"
        die "samba-tool domain passwordsettings failed"
    fi
    mkdir -p "$D/run" "$D/log" "$D/cache"
    write_secret "$ADMIN_PW_FILE" "$ADMIN_PW"
    : >"$MARKER"
    # Pristine snapshot for `reset` (before the first start).
    tar -C "$D" --sparse --exclude='./pristine.tar*' -cf "$SNAPSHOT.tmp" .
    mv -f "$SNAPSHOT.tmp" "$SNAPSHOT"
    log "provisioned in $(elapsed_s "$t0") s (snapshot $SNAPSHOT)"
}

show_logs() {
    local f
    for f in "$D/log/samba.stderr" "$LOGFILE"; do
        [[ -s $f ]] && tail_log "$f" 30
    done
    return 0
}

check_ports_free() {
    local p
    for p in "$LDAP_PORT" "$LDAPS_PORT"; do
        if port_open "$HOST" "$p"; then
            die "$HOST:$p is already in use by another process (ss -ltnp 'sport = :$p')"
        fi
    done
}

start_daemon() {
    local pid
    if pid=$(running_pid); then
        if wait_port "$HOST" "$LDAP_PORT" "$START_TIMEOUT" "$pid" &&
            wait_port "$HOST" "$LDAPS_PORT" "$START_TIMEOUT" "$pid"; then
            log "already running (pid $pid)"
            return 0
        fi
        if proc_alive "$pid"; then
            die "samba (pid $pid) runs but does not answer on $HOST:$LDAP_PORT/$LDAPS_PORT; try '$0 stop'"
        fi
        log "samba (pid $pid) exited while we waited for it; starting it again"
    fi
    check_ports_free

    rm -f "$PIDFILE"
    mkdir -p "$D/run" "$D/log" "$D/cache"
    local t0
    t0=$(now_ms)
    # 9>&-: the daemon must not inherit the lock fd of take_lock.
    # -l: log to $D/log/log.samba (it overrides "log file"; without it the first messages
    # go to /var/log/samba/log.samba).
    if ! samba -s "$CONF" -D -l "$D/log" >>"$D/log/samba.stderr" 2>&1 9>&-; then
        show_logs
        die "samba -D failed"
    fi
    # The daemon writes its pid file shortly after forking.
    local i
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        pid=$(running_pid) && break
        sleep 0.1
    done
    if [[ -z ${pid:-} ]]; then
        show_logs
        die "samba did not write $PIDFILE (or died) within ${START_TIMEOUT}s"
    fi
    if ! wait_port "$HOST" "$LDAP_PORT" "$START_TIMEOUT" "$pid" ||
        ! wait_port "$HOST" "$LDAPS_PORT" "$START_TIMEOUT" "$pid"; then
        show_logs
        if ! proc_alive "$pid"; then
            rm -f "$PIDFILE"
            die "samba (pid $pid) exited during startup (see the logs above)"
        fi
        stop_pidfile "$PIDFILE" samba TERM "$STOP_TIMEOUT"
        die "samba did not answer on $HOST:$LDAP_PORT and $HOST:$LDAPS_PORT within ${START_TIMEOUT}s"
    fi
    log "samba started (pid $pid) in $(elapsed_s "$t0") s"
}

# The non-admin account without Replicating-Directory-Changes: DirSync with flags 0 must fail
# for it with insufficientAccessRights (tests of the uSNChanged fallback).
ensure_svc_account() {
    write_secret "$SVC_PW_FILE" "$SVC_PW"
    local rc i
    for ((i = 0; i < 50; i++)); do
        rc=0
        ldap_cmd ldapsearch -x -LLL -H "ldaps://$HOST:$LDAPS_PORT" -D "$ADMIN_BIND" \
            -y "$ADMIN_PW_FILE" -b "$SVC_DN" -s base dn >/dev/null 2>"$D/log/svc-account.err" || rc=$?
        # 255: cannot contact the server; retry briefly while samba is alive.
        if [[ $rc -ne 255 ]] || ! running_pid >/dev/null; then
            break
        fi
        sleep 0.1
    done
    case $rc in
        0) return 0 ;;
        32) ;; # noSuchObject: create it
        *)
            cat "$D/log/svc-account.err" >&2
            running_pid >/dev/null || log "samba is no longer running"
            show_logs
            die "ldapsearch for $SVC_DN failed (rc $rc)"
            ;;
    esac
    # unicodePwd is base64(UTF-16LE("\"password\"")), settable over an encrypted connection.
    local pw_b64
    pw_b64=$(printf '"%s"' "$SVC_PW" | iconv -f UTF-8 -t UTF-16LE | base64 -w0)
    if ! ldap_cmd ldapadd -x -H "ldaps://$HOST:$LDAPS_PORT" -D "$ADMIN_BIND" -y "$ADMIN_PW_FILE" \
        >/dev/null 2>"$D/log/svc-account.err" <<EOF; then
dn: $SVC_DN
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: $SVC_NAME
sAMAccountName: $SVC_NAME
userPrincipalName: $SVC_NAME@$DNS_DOMAIN
description: syncctl tests: no Replicating-Directory-Changes right (DirSync flags 0 must fail)
unicodePwd:: $pw_b64
userAccountControl: 512
EOF
        cat "$D/log/svc-account.err" >&2
        die "could not create $SVC_DN"
    fi
    if ! ldap_cmd ldapsearch -x -LLL -H "ldaps://$HOST:$LDAPS_PORT" -D "$SVC_DN" -y "$SVC_PW_FILE" \
        -b "" -s base dn >/dev/null 2>"$D/log/svc-account.err"; then
        cat "$D/log/svc-account.err" >&2
        die "$SVC_DN was created but cannot bind"
    fi
    log "created $SVC_DN"
}

print_env() {
    print_export SYNCCTL_TEST_SAMBA_URL "ldap://$HOST:$LDAP_PORT"
    print_export SYNCCTL_TEST_SAMBA_LDAPS_URL "ldaps://$HOST:$LDAPS_PORT"
    print_export SYNCCTL_TEST_SAMBA_BASE "$BASE_DN"
    print_export SYNCCTL_TEST_SAMBA_BIND_DN "$ADMIN_BIND"
    print_export SYNCCTL_TEST_SAMBA_PASSWORD_FILE "$ADMIN_PW_FILE"
    print_export SYNCCTL_TEST_SAMBA_CA "$TLS_DIR/ca.pem"
    print_export SYNCCTL_TEST_SAMBA_NODIRSYNC_DN "$SVC_DN"
    print_export SYNCCTL_TEST_SAMBA_NODIRSYNC_PASSWORD_FILE "$SVC_PW_FILE"
}

cmd_start() {
    require_root "Samba AD DC"
    ensure_packages "${PACKAGES[@]}"
    if ! is_provisioned; then
        running_pid >/dev/null || check_ports_free # fail before a 5 s provision
        provision
    fi
    start_daemon
    ensure_svc_account
    print_env
}

cmd_stop() { stop_peer "$PIDFILE" samba TERM "$STOP_TIMEOUT"; }

cmd_status() {
    local pid
    if pid=$(running_pid); then
        local s="running (pid $pid, data dir $D)" p
        for p in "$LDAP_PORT" "$LDAPS_PORT"; do
            if port_open "$HOST" "$p"; then s+=", $p open"; else s+=", $p CLOSED"; fi
        done
        echo "samba-ad: $s"
        return 0
    fi
    if is_provisioned; then
        echo "samba-ad: stopped (provisioned in $D)"
    else
        echo "samba-ad: stopped (not provisioned)"
    fi
    return 3
}

cmd_reset() {
    require_root "Samba AD DC"
    if ! is_provisioned; then
        cmd_start
        return
    fi
    local t0
    t0=$(now_ms)
    cmd_stop
    assert_safe_dir "$D"
    find "$D" -mindepth 1 -maxdepth 1 ! -name "$(basename "$SNAPSHOT")" -exec rm -rf {} +
    tar -C "$D" -xf "$SNAPSHOT"
    log "restored pristine snapshot in $(elapsed_s "$t0") s"
    start_daemon
    ensure_svc_account
    log "reset done in $(elapsed_s "$t0") s"
    print_env
}

cmd_check() {
    running_pid >/dev/null || die "not running"
    local base=(-x -LLL -o ldif-wrap=no -D "$ADMIN_BIND" -y "$ADMIN_PW_FILE" -b "$BASE_DN" -s base dn)
    ldap_cmd ldapsearch -H "ldap://$HOST:$LDAP_PORT" "${base[@]}" >/dev/null ||
        die "plain search on ldap://$HOST:$LDAP_PORT failed"
    log "ok: plain ldap://$HOST:$LDAP_PORT"
    ldap_cmd ldapsearch -ZZ -H "ldap://$HOST:$LDAP_PORT" "${base[@]}" >/dev/null ||
        die "StartTLS search on ldap://$HOST:$LDAP_PORT failed"
    log "ok: StartTLS (-ZZ) on ldap://$HOST:$LDAP_PORT, cert verified"
    ldap_cmd ldapsearch -H "ldaps://$HOST:$LDAPS_PORT" "${base[@]}" >/dev/null ||
        die "search on ldaps://$HOST:$LDAPS_PORT failed"
    log "ok: ldaps://$HOST:$LDAPS_PORT, cert verified"
    local out
    out=$(ldap_cmd ldapsearch -x -LLL -o ldif-wrap=no -H "ldap://$HOST:$LDAP_PORT" -D "$ADMIN_BIND" \
        -y "$ADMIN_PW_FILE" -b "$BASE_DN" -E '!dirsync=0/0' '(objectClass=user)' objectGUID sAMAccountName)
    grep -q '^# cookie:: ' <<<"$out" || die "DirSync as Administrator returned no cookie"
    log "ok: DirSync (flags 0) as Administrator"
    local rc=0
    out=$(ldap_cmd ldapsearch -x -LLL -H "ldap://$HOST:$LDAP_PORT" -D "$SVC_DN" -y "$SVC_PW_FILE" \
        -b "$BASE_DN" -E '!dirsync=0/0' '(objectClass=user)' objectGUID 2>&1) || rc=$?
    [[ $rc -eq 50 ]] || die "DirSync (flags 0) as $SVC_NAME: expected rc 50, got $rc: $out"
    log "ok: DirSync (flags 0) as $SVC_NAME fails with insufficientAccessRights (50)"
}

main() {
    local cmd=${1:-}
    case $cmd in
        start | stop | restart | reset)
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
        reset) cmd_reset ;;
        check) cmd_check ;;
        *)
            echo "usage: $0 {start|stop|restart|status|env|reset|check}" >&2
            exit 2
            ;;
    esac
}

main "$@"
