#!/usr/bin/env bash
# Measures the kernel's memory per idle TCP connection on this host, next to
# the server's own RSS per connection, by running `chatbench idle` (which
# starts its own switchboard, opens N authenticated WebSockets from this
# host, holds them, then closes them) and sampling the kernel while it runs.
#
# Both ends are on this host (loopback), so each kernel figure it prints per
# connection counts a *pair*: the client socket in chatbench and the server
# socket in switchboard. Slab caches are listed one by one so that the server's share
# can be told apart (see README.md, "Memory budget").
#
# Run from the workspace root after `cargo build --release -p engine -p benches`.
# Root is needed only to read /proc/slabinfo; without it the slab breakdown
# is skipped and only /proc/net/sockstat and /proc/meminfo are used.
#
# Usage: tuning/measure.sh [--conns N] [--shards N] [--chatbench PATH]
set -euo pipefail

conns=10000
shards=2
chatbench=target/release/chatbench
interval=0.2

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --conns) conns="$2"; shift 2 ;;
        --shards) shards="$2"; shift 2 ;;
        --chatbench) chatbench="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "measure.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ ! -x "$chatbench" ]]; then
    echo "measure.sh: $chatbench not found; run: cargo build --release -p engine -p benches" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Slab caches a TCP socket and its file descriptor live in: `TCP` is struct
# tcp_sock; `sock_inode_cache` the socket's inode; `filp` and `dentry` its
# open file; `io_kiocb` the server's pending io_uring poll for readiness;
# `eventpoll_*` an epoll registration (the epoll fallback driver). Caches
# that SLUB merges with others (kmalloc-*, and often eventpoll_*) also move
# with unrelated activity on the host: read them with care.
slab_caches='^(TCP|sock_inode_cache|filp|dentry|io_kiocb|eventpoll_epi|eventpoll_pwq|tcp_bind_bucket|tcp_bind2_bucket)$'

# One sample on one line of key=value fields: TCP sockets allocated, TCP
# buffer pages, Slab and SUnreclaim kB, the server's memory mappings (if its
# pid is known), then slab:NAME=bytes:objects:object_size per cache above
# (if /proc/slabinfo is readable).
sample() {
    local server_pid=${1:-}
    awk '/^TCP:/ { for (i = 2; i < NF; i += 2) v[$i] = $(i + 1); printf "alloc=%d mem=%d", v["alloc"], v["mem"] }' /proc/net/sockstat
    awk '/^Slab:/ { s = $2 } /^SUnreclaim:/ { u = $2 } END { printf " slab=%d sunreclaim=%d", s, u }' /proc/meminfo
    if [[ -n "$server_pid" && -r /proc/$server_pid/maps ]]; then
        printf ' maps=%d' "$(wc -l <"/proc/$server_pid/maps")"
    fi
    if [[ -r /proc/slabinfo ]]; then
        # Bytes held = slabs * pages per slab * page size.
        awk -v re="$slab_caches" -v page="$(getconf PAGESIZE)" \
            'NR > 2 && $1 ~ re { printf " slab:%s=%d:%d:%d", $1, $15 * $6 * page, $2, $4 }' /proc/slabinfo
    fi
    printf '\n'
}

echo "measure.sh: $conns idle WebSockets, $shards shards, kernel $(uname -r), page $(getconf PAGESIZE) B"
sample >"$work/before"

"$chatbench" --shards "$shards" idle --conns "$conns" --settle 6 >"$work/bench.out" 2>&1 &
bench=$!
server=""
while kill -0 "$bench" 2>/dev/null; do
    if [[ -z "$server" ]]; then
        server=$(pgrep -P "$bench" -x switchboard || true)
    fi
    sample "$server" >>"$work/samples"
    sleep "$interval"
done
bench_rc=0
wait "$bench" || bench_rc=$?
sample >"$work/after"

cat "$work/bench.out"
if [[ $bench_rc -ne 0 ]]; then
    echo "measure.sh: chatbench failed ($bench_rc)" >&2
    exit 1
fi

# The peak is the sample with the most TCP sockets allocated: all
# connections open and settled.
sort -t= -k2,2n "$work/samples" | tail -n 1 >"$work/peak"

awk -v conns="$conns" -v page="$(getconf PAGESIZE)" '
    function fields(line, into,    n, parts, i, kv, v) {
        n = split(line, parts, " ")
        for (i = 1; i <= n; i++) {
            split(parts[i], kv, "=")
            if (kv[1] ~ /^slab:/) {
                split(kv[2], v, ":")
                name = substr(kv[1], 6)
                caches[name] = 1
                into["bytes:" name] = v[1]; into["objs:" name] = v[2]; into["size:" name] = v[3]
            } else {
                into[kv[1]] = kv[2]
            }
        }
    }
    FILENAME ~ /before$/ { fields($0, b) }
    FILENAME ~ /peak$/ { fields($0, p) }
    END {
        printf "\nkernel, before -> peak (%d connections: %d sockets on this host, both ends)\n", conns, 2 * conns
        printf "  TCP sockets allocated  %d -> %d (%+d)\n", b["alloc"], p["alloc"], p["alloc"] - b["alloc"]
        printf "  TCP buffer pages       %d -> %d (%+d pages, %+.1f B per connection pair)\n", b["mem"], p["mem"], p["mem"] - b["mem"], (p["mem"] - b["mem"]) * page / conns
        printf "  Slab                   %+d kB (%.0f B per connection pair; counts unrelated activity too)\n", p["slab"] - b["slab"], (p["slab"] - b["slab"]) * 1024 / conns
        printf "  SUnreclaim             %+d kB (%.0f B per connection pair)\n", p["sunreclaim"] - b["sunreclaim"], (p["sunreclaim"] - b["sunreclaim"]) * 1024 / conns
        if ("maps" in p) printf "  server mappings        %d at peak (vm.max_map_count)\n", p["maps"]
        if (length(caches) == 0) { print "  (no /proc/slabinfo: run as root for the per-cache breakdown)"; exit }
        printf "  %-18s %9s %9s %12s %10s\n", "slab cache", "objects", "object B", "bytes held", "B per pair"
        for (name in caches) {
            d = p["bytes:" name] - b["bytes:" name]; o = p["objs:" name] - b["objs:" name]
            printf "  %-18s %+9d %9d %+12d %10.0f\n", name, o, p["size:" name], d, d / conns
            total += d
        }
        printf "  %-18s %9s %9s %+12d %10.0f\n", "these caches", "", "", total, total / conns
    }
' "$work/before" "$work/peak"

# SLUB merges caches of the same size and flags: a cache that is a symlink
# in /sys/kernel/slab shares its numbers with every other name pointing at
# the same target (here, `eventpoll_epi` is often the client's port
# buckets, `tcp_bind_bucket` and `tcp_bind2_bucket`).
if [[ -r /proc/slabinfo && -d /sys/kernel/slab ]]; then
    declare -A seen=()
    for link in /sys/kernel/slab/*; do
        [[ -L "$link" ]] || continue
        name=${link##*/}
        [[ "$name" =~ $slab_caches ]] || continue
        target=$(readlink "$link")
        [[ -z "${seen[$target]:-}" ]] || continue
        seen[$target]=1
        others=$(find /sys/kernel/slab -maxdepth 1 -lname "$target" -printf '%f ' | sed 's/ $//')
        echo "  note: merged cache ${target##*/} holds all of: $others"
    done
fi
