#!/usr/bin/env bash
# Reports every setting apply.sh manages against its target, and the open
# file limits of this shell and, with --pid, of a running switchboard.
# Needs no root. Exits 0 if everything is at its target, 1 if anything is
# not (LOW, HIGH, NARROW or DIFF), 2 on bad usage.
#
# Usage: tuning/check.sh [--pid PID]
#   --pid PID   also check /proc/PID/limits (e.g. --pid "$(pgrep -x switchboard)")
#
# Statuses: OK; LOW (below a minimum); HIGH (above a maximum); NARROW (a
# range that does not cover the target's); DIFF (not the exact value set).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=apply.sh
source "$here/apply.sh"

pid=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --pid)
            [[ $# -ge 2 ]] || { echo "check.sh: --pid needs a process id" >&2; exit 2; }
            pid=$2
            shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if [[ -n "$pid" && ! "$pid" =~ ^[0-9]+$ ]]; then
    echo "check.sh: --pid wants one numeric process id, not \"$pid\"" >&2
    exit 2
fi

failed=0

row() {
    printf '%-40s %-26s %-30s %s\n' "$1" "$2" "$3" "$4"
}

# want KIND TARGET -> a human-readable target
want() {
    case "$1" in
        min) echo ">= $2" ;;
        max) echo "<= $2" ;;
        range) echo "covers $2" ;;
        eq) echo "= $2" ;;
    esac
}

# limit_status CURRENT TARGET -> OK or LOW; "unlimited" is OK.
limit_status() {
    if [[ "$1" == unlimited ]] || (( $1 >= $2 )); then echo OK; else echo LOW; fi
}

echo "host: $(uname -n), kernel $(uname -r), $(awk '/^MemTotal:/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
echo
row "sysctl" "current" "target" "status"
for i in "${!SETTING_KEYS[@]}"; do
    key=${SETTING_KEYS[i]}
    kind=${SETTING_KINDS[i]}
    target=${SETTING_TARGETS[i]}
    if ! current=$(sysctl_read "$key"); then
        if [[ -n "${SETTING_OPTIONAL[i]}" ]]; then
            row "$key" "(absent)" "$(want "$kind" "$target")" "OK (module not loaded)"
            continue
        fi
        row "$key" "(absent)" "$(want "$kind" "$target")" "MISSING"
        failed=1
        continue
    fi
    status=$(compare "$kind" "$current" "$target")
    row "$key" "$current" "$(want "$kind" "$target")" "$status"
    [[ "$status" == OK ]] || failed=1
done

echo
row "process limit" "soft / hard" "target" "status"
soft=$(ulimit -Sn)
hard=$(ulimit -Hn)
s_soft=$(limit_status "$soft" "$TUNING_NOFILE")
s_hard=$(limit_status "$hard" "$TUNING_NOFILE")
status=OK
[[ "$s_soft" == OK && "$s_hard" == OK ]] || { status=LOW; failed=1; }
row "this shell: open files (ulimit -n)" "$soft / $hard" ">= $TUNING_NOFILE" "$status"

if [[ -n "$pid" ]]; then
    if [[ ! -r "/proc/$pid/limits" ]]; then
        echo "check.sh: no process $pid (or /proc/$pid/limits is unreadable)" >&2
        exit 1
    fi
    comm=$(<"/proc/$pid/comm")
    [[ "$comm" == switchboard ]] || echo "note: process $pid is \"$comm\", not switchboard"
    # /proc/PID/limits: "Max open files   1048576   1048576   files"
    read -r soft hard < <(awk '/^Max open files/ { print $4, $5 }' "/proc/$pid/limits")
    status=OK
    if [[ $(limit_status "$soft" "$TUNING_NOFILE") != OK || $(limit_status "$hard" "$TUNING_NOFILE") != OK ]]; then
        status=LOW
        failed=1
    fi
    row "pid $pid ($comm): open files" "$soft / $hard" ">= $TUNING_NOFILE" "$status"
    read -r soft hard < <(awk '/^Max locked memory/ { print $4, $5 }' "/proc/$pid/limits")
    status=$(limit_status "$soft" "$TUNING_MEMLOCK_BYTES")
    [[ "$status" == OK ]] || failed=1
    row "pid $pid ($comm): locked memory" "$soft / $hard" ">= $TUNING_MEMLOCK_BYTES B" "$status"
    if [[ -r "/proc/$pid/fd" ]]; then
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
        echo "pid $pid ($comm): $fds files open now"
    fi
fi

echo
if io_uring=$(sysctl_read kernel.io_uring_disabled 2>/dev/null); then
    case "$io_uring" in
        0) echo "io_uring: enabled (kernel.io_uring_disabled = 0); the engine uses it" ;;
        1) echo "io_uring: restricted to a group (kernel.io_uring_disabled = 1); outside it the engine falls back to epoll" ;;
        *) echo "io_uring: disabled (kernel.io_uring_disabled = $io_uring); the engine falls back to epoll" ;;
    esac
fi
if [[ -f "$TUNING_STATE_FILE" ]]; then
    echo "apply.sh has saved previous values in $TUNING_STATE_FILE (restore.sh puts them back)"
fi
if [[ "$failed" == 0 ]]; then
    echo "all settings at target"
else
    echo "some settings are not at target: run tuning/apply.sh as root (process limits: switchboard.service, or a new login after apply.sh)"
fi
exit "$failed"
