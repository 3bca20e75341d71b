#!/usr/bin/env bash
# Tunes a Linux host so that one switchboard process can hold a million
# concurrent WebSockets (and a load generator on the same or another host can
# open them). Each setting below says why it is needed and why its value.
#
# Before changing anything it saves the values in force to a state file, so
# that restore.sh can put them back; a second run keeps the values first
# saved. It only ever moves a setting towards its target: a limit already
# higher than ours is left alone. Running it again changes nothing.
#
# Usage: tuning/apply.sh [--dry-run] [--no-persist]
#   --dry-run     print what would be saved and written; change nothing
#                 (the only mode that runs without root)
#   --no-persist  set the running kernel only; write no file under /etc, so
#                 the settings last until the next reboot
#
# Environment (defaults in brackets):
#   SWITCHBOARD_TUNING_STATE_DIR   [/var/lib/switchboard-tuning] saved values
#   SWITCHBOARD_TUNING_SYSCTL_CONF [/etc/sysctl.d/90-switchboard.conf]
#   SWITCHBOARD_TUNING_LIMITS_CONF [/etc/security/limits.d/90-switchboard.conf]
#   SWITCHBOARD_TUNING_PROC_SYS    [/proc/sys] where sysctls are read and
#                                  written (a copy of the tree, for testing)
#
# check.sh and restore.sh source this file for the table and the helpers;
# `main` runs only when it is executed.
set -euo pipefail

TUNING_PROC_SYS=${SWITCHBOARD_TUNING_PROC_SYS:-/proc/sys}
TUNING_STATE_DIR=${SWITCHBOARD_TUNING_STATE_DIR:-/var/lib/switchboard-tuning}
TUNING_STATE_FILE=$TUNING_STATE_DIR/saved
TUNING_SYSCTL_CONF=${SWITCHBOARD_TUNING_SYSCTL_CONF:-/etc/sysctl.d/90-switchboard.conf}
TUNING_LIMITS_CONF=${SWITCHBOARD_TUNING_LIMITS_CONF:-/etc/security/limits.d/90-switchboard.conf}

# Open files per process: one per connection, plus the store's files,
# listeners, io_uring rings, eventfds and pipes (about 20 at 10k
# connections). 2^20 leaves ~48k of headroom above a million connections.
# systemd services get it from LimitNOFILE (switchboard.service); login
# shells (load generators, benches) from the limits.d file written here.
TUNING_NOFILE=1048576

# monoio sets up its io_uring rings in locked memory when the process lacks
# CAP_IPC_LOCK: two rings of 1024 entries need at least 256 KiB (MEASURED.md).
# Checked by check.sh; switchboard.service sets LimitMEMLOCK.
# shellcheck disable=SC2034 # used by check.sh, which sources this file
TUNING_MEMLOCK_BYTES=262144

SETTING_KEYS=()
SETTING_KINDS=()
SETTING_TARGETS=()
SETTING_OPTIONAL=()

# setting KEY KIND TARGET [optional]
#   KIND min:   every field at least TARGET's (apply only raises)
#        max:   at most TARGET (apply only lowers)
#        range: "lo hi" covering TARGET's range (apply only widens)
#        eq:    exactly TARGET
#   optional: the key may be absent (its module not loaded); then skipped.
setting() {
    SETTING_KEYS+=("$1")
    SETTING_KINDS+=("$2")
    SETTING_TARGETS+=("$3")
    SETTING_OPTIONAL+=("${4:-}")
}

# --- Accepting: reconnect storms -----------------------------------------

# Cap on every listen() backlog (the accept queue of fully established
# connections). When a million clients reconnect after a restart or a network
# blip, a shard that falls behind must not overflow its queue: an overflowed
# queue silently drops the final ACK, the client thinks it is connected and
# the server never sees it until a retransmit 1 s, 3 s ... later
# (MEASURED.md). 65535 is the largest value older kernels accept. The
# engine asks for its own backlog per shard listener (LISTEN_BACKLOG in
# engine/src/server.rs, 4096 today); the kernel uses min(that, somaxconn).
setting net.core.somaxconn min 65535

# Half-open connections (SYN received, SYN-ACK sent) queued per listener
# during the same storms. Sized like somaxconn so the SYN queue is not the
# narrower of the two.
setting net.ipv4.tcp_max_syn_backlog min 65535

# SYN cookies: if the SYN queue does overflow anyway (storm or SYN flood),
# handshakes still complete instead of being dropped. On by default; checked
# so that nobody has turned it off.
setting net.ipv4.tcp_syncookies min 1

# Packets queued per CPU between the NIC's interrupt and the network stack
# when they arrive faster than softirq processing takes them: a reconnect
# storm is a burst of small packets (SYN, ACK, the upgrade request, TLS at a
# proxy). 1000 drops them at about 1000 per CPU tick of backlog; 16384 rides
# out bursts without holding much (skbs are queued only while behind).
setting net.core.netdev_max_backlog min 16384

# --- File descriptors ----------------------------------------------------

# Open files in the whole system. A million server sockets plus, when the
# load generator shares the host, a million client sockets, plus everything
# else: 4M. Only a ceiling: nothing is allocated until files are opened.
setting fs.file-max min 4194304

# Ceiling for any process's RLIMIT_NOFILE: LimitNOFILE (and `ulimit -n`)
# cannot exceed it. 1048576 is the kernel default; 2M leaves room to give a
# load-generator worker or a bigger engine more than 2^20. A ceiling only.
setting fs.nr_open min 2097152

# epoll registrations per user. The engine's epoll fallback (hosts with
# io_uring disabled) registers each connection once, and so do epoll-based
# load generators running as the same user. The default is 4% of RAM
# divided by the ~200 B a watch costs: under a million below ~5 GiB of RAM,
# under 2M below ~10 GiB. A ceiling only.
setting fs.epoll.max_user_watches min 2097152

# --- Outgoing connections: load generators ---------------------------------

# Ephemeral ports for outgoing connections: each (source address,
# destination) pair can have at most this many connections. The load
# generator spreads a million over many source addresses (127.0.0.2 ...), but
# the fewer it needs the better, and the default 32768-60999 gives only 28k.
# Starting at 10240 keeps the range clear of the engine's port (8080 by
# default) and the usual service ports below it; if the engine listens
# inside the range, reserve its port in net.ipv4.ip_local_reserved_ports.
# The two ends have different parity, as the kernel prefers (it splits
# connect() and bind() ports by parity).
setting net.ipv4.ip_local_port_range range "10240 65535"

# Let a new outgoing connection reuse a 4-tuple in TIME_WAIT when it is safe
# by timestamps. For load generators, which close and reopen connections to
# the same destination in reconnect tests; the default 2 applies it to
# loopback only. It has no effect on accepted (server) sockets.
setting net.ipv4.tcp_tw_reuse eq 1

# Seconds an orphaned connection (closed by us, peer not done) waits in
# FIN_WAIT_2. The engine closes idle connections (4005) and, on SIGTERM, all
# of them (1001); with a million closing at once, 60 s of FIN_WAIT_2 holds
# their memory for a minute. 15 s is ample for a live peer's FIN.
setting net.ipv4.tcp_fin_timeout max 15

# --- TCP memory ------------------------------------------------------------

# Pages (4 KiB) all TCP sockets together may hold in send and receive
# buffers: below the first number the kernel does not limit; above the second
# it shrinks buffers ("pressure"); at the third it refuses to queue more
# (drops, "TCP: out of memory"). Idle sockets hold no buffer pages (measured:
# 10k idle WebSockets added 0 pages to /proc/net/sockstat "mem"), but one
# delivery to a million devices queues at least one page on each socket
# until the client reads it: 1M pages = 4 GiB. So: no limit up to 4 GiB
# (one page per connection), pressure from 6 GiB, refuse at 8 GiB (two
# pages per connection). The default is 4.7%/6.25%/9.4% of RAM, which on a
# 32 GiB host refuses at 3 GiB, under one page per connection.
setting net.ipv4.tcp_mem min "1048576 1572864 2097152"

# Per-socket receive buffer: minimum guaranteed under pressure, initial
# size, autotuning maximum. The first two cost nothing while a socket is
# idle; shrinking them does not reduce idle memory (MEASURED.md: < 3%). The
# default 128 KiB takes a whole client message (at most 128 KiB,
# CLIENT_MESSAGE_BYTES_MAX) in one go. The maximum is lowered from 6 MiB to
# 1 MiB: no chat client needs more, and it bounds what one fast sender can
# pin in the server's kernel memory.
setting net.ipv4.tcp_rmem eq "4096 131072 1048576"

# Per-socket send buffer: the kernel default. 16 KiB to start, so a million
# sockets with a message queued hold little; autotuning up to 4 MiB for a
# client fetching history pages (up to 1 MiB each) over a long path. tcp_mem
# bounds the total. Written so that an earlier tuning's values are replaced.
setting net.ipv4.tcp_wmem eq "4096 16384 4194304"

# A chat connection is idle most of the time and then sends a burst (a
# catch-up, a history page). With the default 1, every idle period longer
# than the retransmission timeout resets the congestion window and the burst
# starts again from slow start. 0 keeps the window across idle periods.
setting net.ipv4.tcp_slow_start_after_idle eq 0

# --- Memory mappings -------------------------------------------------------

# Memory mappings per process. Not a limit we expect to reach: the engine
# had 84 mappings holding 10k connections (measured), mimalloc maps large
# segments and the store reads files without mmap. The default 65530 is
# raised as cheap headroom: running out kills the process (failed mmap in the
# allocator), and a million connections is 100x what was measured.
setting vm.max_map_count min 262144

# --- Connection tracking (only where the nf_conntrack module is loaded) ----

# With a stateful firewall (iptables/nftables conntrack, Docker), every
# connection needs an entry; when the table is full new connections are
# dropped ("nf_conntrack: table full, dropping packet"). A million server
# connections plus a million from a local load generator: 2M entries of
# ~256 B (the nf_conntrack slab object here) = 512 MiB at most, allocated as
# used. Better still, exempt the engine's port from tracking (raw table,
# NOTRACK) and leave this alone. The hash table's size is the module
# parameter hashsize (see README.md).
setting net.netfilter.nf_conntrack_max min 2097152 optional

# --- Helpers (also used by check.sh and restore.sh) ------------------------

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# /proc/sys path of a dotted key.
sysctl_path() {
    printf '%s/%s' "$TUNING_PROC_SYS" "${1//.//}"
}

# Prints a sysctl's value with its fields separated by single spaces; fails
# if the key does not exist.
sysctl_read() {
    local path
    path=$(sysctl_path "$1")
    [[ -r "$path" ]] || return 1
    local -a fields
    read -r -a fields <"$path"
    echo "${fields[*]}"
}

sysctl_write() {
    local path
    path=$(sysctl_path "$1")
    if ! printf '%s\n' "$2" 2>/dev/null >"$path"; then
        die "cannot write $1 = \"$2\" to $path (read-only /proc/sys, a container without the capability, or a value the kernel refuses)"
    fi
    local now
    now=$(sysctl_read "$1")
    [[ "$now" == "$2" ]] || die "wrote $1 = \"$2\" but the kernel reports \"$now\""
}

# compare KIND CURRENT TARGET -> OK, LOW, HIGH, NARROW or DIFF
compare() {
    local kind=$1 current=$2 target=$3
    local -a cur tgt
    read -r -a cur <<<"$current"
    read -r -a tgt <<<"$target"
    case "$kind" in
        min)
            [[ ${#cur[@]} -eq ${#tgt[@]} ]] || { echo DIFF; return; }
            local i
            for i in "${!tgt[@]}"; do
                if (( cur[i] < tgt[i] )); then echo LOW; return; fi
            done
            echo OK ;;
        max)
            if (( cur[0] > tgt[0] )); then echo HIGH; else echo OK; fi ;;
        range)
            if (( cur[0] > tgt[0] || cur[1] < tgt[1] )); then echo NARROW; else echo OK; fi ;;
        eq)
            if [[ "$current" == "$target" ]]; then echo OK; else echo DIFF; fi ;;
        *) die "unknown kind $kind" ;;
    esac
}

# goal KIND CURRENT TARGET -> the value apply.sh writes: the target, except
# that a min never lowers, a max never raises and a range never narrows.
goal() {
    local kind=$1 current=$2 target=$3
    local -a cur tgt out
    read -r -a cur <<<"$current"
    read -r -a tgt <<<"$target"
    case "$kind" in
        min)
            if [[ ${#cur[@]} -ne ${#tgt[@]} ]]; then echo "$target"; return; fi
            local i
            for i in "${!tgt[@]}"; do
                out+=("$(( cur[i] > tgt[i] ? cur[i] : tgt[i] ))")
            done
            echo "${out[*]}" ;;
        max) echo "$(( cur[0] < tgt[0] ? cur[0] : tgt[0] ))" ;;
        range) echo "$(( cur[0] < tgt[0] ? cur[0] : tgt[0] )) $(( cur[1] > tgt[1] ? cur[1] : tgt[1] ))" ;;
        eq) echo "$target" ;;
        *) die "unknown kind $kind" ;;
    esac
}

require_root() {
    if [[ $EUID -ne 0 ]]; then
        die "must run as root (it writes /proc/sys and files under /etc); use --dry-run to see what it would do without root"
    fi
}

# --- apply ------------------------------------------------------------------

# save_state: records the value in force of every setting not saved yet, and
# whether each file we write existed (a copy if it did). Values already in
# the state file are kept, so that a second run does not save our own values
# as "previous".
save_state() {
    local dry_run=$1 persist=$2
    local saved=""
    if [[ -f "$TUNING_STATE_FILE" ]]; then
        saved=$(<"$TUNING_STATE_FILE")
    fi
    local lines=() i key value
    for i in "${!SETTING_KEYS[@]}"; do
        key=${SETTING_KEYS[i]}
        if awk -F '\t' -v k="$key" '$1 == "sysctl" && $2 == k { found = 1 } END { exit !found }' <<<"$saved"; then
            continue
        fi
        value=$(sysctl_read "$key") || continue
        lines+=("$(printf 'sysctl\t%s\t%s' "$key" "$value")")
    done
    if [[ "$persist" == 1 ]]; then
        local file name
        for file in "$TUNING_SYSCTL_CONF" "$TUNING_LIMITS_CONF"; do
            if awk -F '\t' -v f="$file" '$1 == "file" && $2 == f { found = 1 } END { exit !found }' <<<"$saved"; then
                continue
            fi
            if [[ -e "$file" ]]; then
                name=$(printf '%s' "$file" | tr '/' '_')
                lines+=("$(printf 'file\t%s\t%s' "$file" "$name")")
                if [[ "$dry_run" == 0 ]]; then
                    cp -p -- "$file" "$TUNING_STATE_DIR/$name"
                fi
            else
                lines+=("$(printf 'file\t%s\tabsent' "$file")")
            fi
        done
    fi
    if [[ ${#lines[@]} -eq 0 ]]; then
        echo "state: $TUNING_STATE_FILE already holds every previous value"
        return
    fi
    if [[ "$dry_run" == 1 ]]; then
        echo "would save to $TUNING_STATE_FILE:"
        printf '  %s\n' "${lines[@]}" | tr '\t' ' '
        return
    fi
    # Write the new state completely, then rename it into place, so that a
    # crash never leaves half a state file.
    {
        if [[ -n "$saved" ]]; then
            printf '%s\n' "$saved"
        fi
        printf '%s\n' "${lines[@]}"
    } >"$TUNING_STATE_FILE.tmp"
    mv -f -- "$TUNING_STATE_FILE.tmp" "$TUNING_STATE_FILE"
    echo "saved ${#lines[@]} previous values to $TUNING_STATE_FILE"
}

# saved_value KEY DEFAULT -> the value of KEY in the state file, or DEFAULT
# if it has none (a dry run before the first apply).
saved_value() {
    local value=""
    if [[ -f "$TUNING_STATE_FILE" ]]; then
        value=$(awk -F '\t' -v k="$1" '$1 == "sysctl" && $2 == k { print $3; exit }' "$TUNING_STATE_FILE")
    fi
    echo "${value:-$2}"
}

# Writes CONTENT to FILE unless it already holds exactly that.
write_file() {
    local dry_run=$1 file=$2 content=$3
    if [[ -f "$file" && "$(<"$file")" == "$content" ]]; then
        echo "ok       $file is up to date"
        return
    fi
    if [[ "$dry_run" == 1 ]]; then
        echo "would write $file:"
        printf '%s\n' "$content" | sed 's/^/  | /'
        return
    fi
    mkdir -p -- "$(dirname -- "$file")"
    printf '%s\n' "$content" >"$file.tmp"
    mv -f -- "$file.tmp" "$file"
    echo "wrote    $file"
}

memory_warning() {
    local mem_kb
    mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    # ~7 KB per idle connection (README.md, "Memory budget") is ~7 GB for a
    # million, before any traffic; tcp_mem may use up to 8 GiB on top.
    if (( mem_kb < 16 * 1024 * 1024 )); then
        echo "warning: this host has $(( mem_kb / 1024 )) MiB of RAM; a million idle connections need ~7 GB and traffic more (README.md, \"Memory budget\")" >&2
    fi
}

main() {
    local dry_run=0 persist=1
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dry-run) dry_run=1 ;;
            --no-persist) persist=0 ;;
            -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; return 0 ;;
            *) die "unknown argument: $1 (try --help)" ;;
        esac
        shift
    done
    if [[ "$dry_run" == 1 ]]; then
        echo "dry run: nothing is changed"
        [[ $EUID -eq 0 ]] || echo "(not root: a real run would refuse)"
    else
        require_root
        mkdir -p -- "$TUNING_STATE_DIR"
        chmod 700 -- "$TUNING_STATE_DIR"
    fi
    memory_warning
    save_state "$dry_run" "$persist"

    local i key kind target current new status conf_lines=()
    for i in "${!SETTING_KEYS[@]}"; do
        key=${SETTING_KEYS[i]}
        kind=${SETTING_KINDS[i]}
        target=${SETTING_TARGETS[i]}
        if ! current=$(sysctl_read "$key"); then
            if [[ -n "${SETTING_OPTIONAL[i]}" ]]; then
                echo "skip     $key (absent: its module is not loaded)"
                continue
            fi
            die "$key does not exist on this kernel ($(uname -r))"
        fi
        new=$(goal "$kind" "$current" "$target")
        # Persist what this script changes from the value first saved, so
        # that a host's own defaults (often derived from its RAM) are not
        # pinned; and only keys that always exist, since a sysctl.d line for
        # an absent key is an error at boot.
        if [[ -z "${SETTING_OPTIONAL[i]}" && "$new" != "$(saved_value "$key" "$current")" ]]; then
            conf_lines+=("$key = $new")
        fi
        status=$(compare "$kind" "$current" "$target")
        if [[ "$current" == "$new" ]]; then
            printf 'ok       %-36s %s\n' "$key" "$current"
        elif [[ "$dry_run" == 1 ]]; then
            printf 'would set %-35s %s -> %s (%s)\n' "$key" "$current" "$new" "$status"
        else
            sysctl_write "$key" "$new"
            printf 'set      %-36s %s -> %s\n' "$key" "$current" "$new"
        fi
    done

    if [[ "$persist" == 1 ]]; then
        write_file "$dry_run" "$TUNING_SYSCTL_CONF" "$(
            echo "# Written by switchboard tuning/apply.sh; restore.sh removes it."
            echo "# Why each value: tuning/apply.sh and tuning/README.md."
            printf '%s\n' "${conf_lines[@]}"
        )"
        write_file "$dry_run" "$TUNING_LIMITS_CONF" "$(
            echo "# Written by switchboard tuning/apply.sh; restore.sh removes it."
            echo "# Open files for login sessions (load generators, benches); services"
            echo "# get theirs from LimitNOFILE. Applies to new sessions only."
            echo "# '*' does not match root in pam_limits, hence the second pair."
            echo "*    soft nofile $TUNING_NOFILE"
            echo "*    hard nofile $TUNING_NOFILE"
            echo "root soft nofile $TUNING_NOFILE"
            echo "root hard nofile $TUNING_NOFILE"
        )"
    fi
    if [[ "$dry_run" == 0 ]]; then
        echo "done; check with tuning/check.sh, undo with tuning/restore.sh"
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
