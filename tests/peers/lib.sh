# shellcheck shell=bash
# Shared helpers for the syncctl test-peer scripts (Samba AD DC, OpenLDAP slapd).
#
# Source it from a script that runs with `set -euo pipefail`:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Conventions:
#   * progress and errors go to stderr, so that `eval "$(samba-ad.sh start)"` only sees the
#     `export` lines that a script prints on stdout;
#   * every peer keeps all of its state below ${SYNCCTL_PEERS_DIR:-/tmp/syncctl-peers}.

# shellcheck disable=SC2034 # used by the scripts that source this file
PEERS_DIR="${SYNCCTL_PEERS_DIR:-/tmp/syncctl-peers}"

# The name used in messages; scripts set it before sourcing or right after.
PEER_NAME="${PEER_NAME:-peers}"

log() { printf '[%s] %s\n' "$PEER_NAME" "$*" >&2; }

die() {
    printf '[%s] ERROR: %s\n' "$PEER_NAME" "$*" >&2
    exit 1
}

# Milliseconds since the epoch (for timings in messages).
now_ms() { date +%s%3N; }

# elapsed_s START_MS -> "1.23" (seconds since START_MS)
elapsed_s() {
    local start=$1 end
    end=$(now_ms)
    printf '%d.%02d' $(((end - start) / 1000)) $((((end - start) % 1000) / 10))
}

require_root() {
    [[ ${EUID:-$(id -u)} -eq 0 ]] || die "must run as root ($*)"
}

# Refuse obviously dangerous directories before an `rm -rf`.
assert_safe_dir() {
    local dir=$1
    case "$dir" in
        "" | / | /tmp | /tmp/ | /var | /usr | /etc | /root | /home | "$HOME" | "$HOME"/)
            die "refusing to use '$dir' as a peer data directory"
            ;;
        /*) ;;
        *) die "peer data directory must be an absolute path: '$dir'" ;;
    esac
}

# Serialise concurrent invocations for one peer: take_lock LOCKFILE (holds fd 9 until exit).
take_lock() {
    local lockfile=$1
    mkdir -p "$(dirname "$lockfile")"
    exec 9>"$lockfile"
    if ! flock -w 600 9; then
        die "could not take lock $lockfile within 600 s"
    fi
}

# Write a secret to a file with mode 600: write_secret FILE VALUE (no trailing newline).
write_secret() {
    local file=$1 value=$2
    (
        umask 077
        printf '%s' "$value" >"$file.tmp"
    )
    chmod 600 "$file.tmp"
    mv -f "$file.tmp" "$file"
}

# Print `export NAME='value'` (single-quoted; a ' inside becomes '\'').
print_export() {
    local name=$1 value=$2
    local q="'\\''"
    printf "export %s='%s'\n" "$name" "${value//\'/$q}"
}

# ---------------------------------------------------------------------------------------------
# Packages

_PEERS_APT_UPDATED=0
_PEERS_POLICY_RC_CREATED=0

_pkg_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [[ $status == "install ok installed" ]]
}

_apt_update_once() {
    if [[ $_PEERS_APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 -q update >&2
        _PEERS_APT_UPDATED=1
    fi
}

_remove_temp_policy_rc() {
    if [[ $_PEERS_POLICY_RC_CREATED -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
        _PEERS_POLICY_RC_CREATED=0
    fi
}

# ensure_packages PKG... : install the missing ones with apt-get (no recommends). While it runs,
# a /usr/sbin/policy-rc.d that exits 101 keeps the postinst scripts from starting system daemons
# (smbd, nmbd, samba-ad-dc, slapd); it is removed again if this function created it (an EXIT
# trap covers an abort half-way; it replaces any EXIT trap the caller had set before).
ensure_packages() {
    local pkg missing=()
    for pkg in "$@"; do
        _pkg_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    require_root "apt-get install ${missing[*]}"
    local t0
    t0=$(now_ms)
    log "installing: ${missing[*]}"

    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary: created by syncctl tests/peers/lib.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        _PEERS_POLICY_RC_CREATED=1
        trap _remove_temp_policy_rc EXIT
    fi

    # Without package lists (fresh image) or with a package unknown to them, update first.
    for pkg in "${missing[@]}"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            _apt_update_once
            break
        fi
    done

    local -a apt_install=(apt-get -o DPkg::Lock::Timeout=600 -q -y --no-install-recommends install)
    if ! DEBIAN_FRONTEND=noninteractive "${apt_install[@]}" "${missing[@]}" >&2; then
        # Stale package lists give 404s: update once and retry.
        if [[ $_PEERS_APT_UPDATED -eq 0 ]]; then
            _apt_update_once
            DEBIAN_FRONTEND=noninteractive "${apt_install[@]}" "${missing[@]}" >&2 ||
                { _remove_temp_policy_rc; die "apt-get install ${missing[*]} failed"; }
        else
            _remove_temp_policy_rc
            die "apt-get install ${missing[*]} failed"
        fi
    fi
    _remove_temp_policy_rc
    log "installed ${missing[*]} in $(elapsed_s "$t0") s"
}

# ---------------------------------------------------------------------------------------------
# TLS

# make_ca DIR : a CA (ca.pem, ca.key) and a server certificate signed by it (cert.pem, key.pem,
# mode 600) for IP:127.0.0.1, IP:::1, DNS:localhost and the machine's host name(s).
# Idempotent: an existing set that still verifies and covers this host name is kept.
make_ca() {
    local dir=$1 host fqdn san
    host=$(hostname 2>/dev/null || uname -n)
    fqdn=$(hostname -f 2>/dev/null || true)
    san="IP:127.0.0.1,IP:::1,DNS:localhost"
    [[ -n $host && $host != localhost ]] && san+=",DNS:$host"
    [[ -n $fqdn && $fqdn != "$host" && $fqdn != localhost ]] && san+=",DNS:$fqdn"

    if [[ -s $dir/ca.pem && -s $dir/ca.key && -s $dir/cert.pem && -s $dir/key.pem ]] &&
        openssl verify -CAfile "$dir/ca.pem" "$dir/cert.pem" >/dev/null 2>&1 &&
        openssl x509 -in "$dir/cert.pem" -noout -checkend 86400 >/dev/null 2>&1 &&
        openssl x509 -in "$dir/cert.pem" -noout -ext subjectAltName 2>/dev/null | grep -q "DNS:$host\b"; then
        chmod 600 "$dir/key.pem" "$dir/ca.key"
        return 0
    fi

    mkdir -p "$dir"
    local tmp
    tmp=$(mktemp -d "$dir/.mkca.XXXXXX")
    (
        umask 077
        openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -subj "/O=syncctl test peers/CN=syncctl test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" \
            -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
        openssl req -new -newkey rsa:2048 -nodes -sha256 \
            -subj "/O=syncctl test peers/CN=$host" \
            -keyout "$tmp/key.pem" -out "$tmp/server.csr" 2>/dev/null
        printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectKeyIdentifier=hash" \
            "authorityKeyIdentifier=keyid" \
            "subjectAltName=$san" >"$tmp/server.ext"
        openssl x509 -req -sha256 -days 3650 -in "$tmp/server.csr" \
            -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
            -extfile "$tmp/server.ext" -out "$tmp/cert.pem" 2>/dev/null
    ) || {
        rm -rf "$tmp"
        die "openssl failed to create the test CA in $dir"
    }
    chmod 600 "$tmp/key.pem" "$tmp/ca.key"
    chmod 644 "$tmp/ca.pem" "$tmp/cert.pem"
    mv -f "$tmp/ca.pem" "$tmp/ca.key" "$tmp/cert.pem" "$tmp/key.pem" "$dir/"
    rm -rf "$tmp"
    log "created test CA and server certificate in $dir (SAN $san)"
}

# ---------------------------------------------------------------------------------------------
# Ports and processes

# proc_alive PID : true if PID is a live process. A zombie does not count: orphaned daemons are
# reaped by PID 1, and on some machines (a minimal init in a micro-VM) that takes ~2 s, during
# which `kill -0` still succeeds.
proc_alive() {
    local pid=$1 stat
    kill -0 "$pid" 2>/dev/null || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # drop "pid (comm) "; the state is the next field
    [[ ${stat%% *} != Z ]]
}

# port_open HOST PORT : true if something accepts a TCP connection there.
port_open() {
    local host=$1 port=$2
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# wait_port HOST PORT TIMEOUT_SECONDS [PID] : poll every 0.1 s; fail early if PID dies.
wait_port() {
    local host=$1 port=$2 timeout=$3 pid=${4:-}
    local i tries=$((timeout * 10))
    for ((i = 0; i < tries; i++)); do
        port_open "$host" "$port" && return 0
        if [[ -n $pid ]] && ! proc_alive "$pid"; then
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# pid_from_file PIDFILE [NAME] : print the PID if the file names a live process (whose command
# name is NAME, when given); otherwise fail.
pid_from_file() {
    local pidfile=$1 name=${2:-} pid comm
    [[ -s $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] || return 1
    proc_alive "$pid" || return 1
    if [[ -n $name ]]; then
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
        [[ $comm == "$name"* ]] || return 1
    fi
    printf '%s\n' "$pid"
}

# _group_alive PGID : true if a live (non-zombie) process is in process group PGID.
_group_alive() {
    local p
    for p in $(pgrep -g "$1" 2>/dev/null); do
        proc_alive "$p" && return 0
    done
    return 1
}

# stop_peer PIDFILE NAME SIGNAL TIMEOUT_SECONDS : a peer script's `stop`: stop_pidfile, saying
# how long it took, or that the peer was not running.
stop_peer() {
    local pidfile=$1 name=$2 pid t0
    if pid=$(pid_from_file "$pidfile" "$name"); then
        t0=$(now_ms)
        stop_pidfile "$@"
        log "stopped (pid $pid) in $(elapsed_s "$t0") s"
    else
        rm -f "$pidfile"
        log "not running"
    fi
}

# stop_pidfile PIDFILE NAME SIGNAL TIMEOUT_SECONDS : send SIGNAL to the process in PIDFILE,
# wait up to TIMEOUT for it to exit, then SIGKILL it (and its process group if it leads one).
stop_pidfile() {
    local pidfile=$1 name=$2 sig=$3 timeout=$4 pid pgid i
    if ! pid=$(pid_from_file "$pidfile" "$name"); then
        rm -f "$pidfile"
        return 0
    fi
    pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        proc_alive "$pid" || break
        sleep 0.1
    done
    if proc_alive "$pid"; then
        log "$name (pid $pid) did not stop within ${timeout}s after SIG$sig; sending SIGKILL"
        if [[ -n $pgid && $pgid == "$pid" ]]; then
            kill -KILL -- "-$pgid" 2>/dev/null || true
        else
            kill -KILL "$pid" 2>/dev/null || true
        fi
        for ((i = 0; i < 50; i++)); do
            proc_alive "$pid" || break
            sleep 0.1
        done
    fi
    # Workers left in a process group whose leader is gone (samba's prefork children).
    if [[ -n $pgid && $pgid == "$pid" ]] && _group_alive "$pgid"; then
        for ((i = 0; i < 20; i++)); do
            _group_alive "$pgid" || break
            sleep 0.1
        done
        if _group_alive "$pgid"; then
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# tail_log FILE [LINES] : show the end of a log on stderr (for failure messages).
tail_log() {
    local file=$1 lines=${2:-40}
    if [[ -s $file ]]; then
        printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" >&2
        printf -- '-----\n' >&2
    else
        printf -- '(no log at %s)\n' "$file" >&2
    fi
}
