#!/usr/bin/env bash
# Builds every cargo-fuzz target in protocol/fuzz (the message codecs and
# tokens) and engine/fuzz (the HTTP request head and the WebSocket frame
# codec) and runs each one briefly from its seed corpus; exits non-zero on any
# build failure or crash.
#
# cargo-fuzz needs unstable rustc flags (-Z sanitizer, sancov). It uses a
# nightly toolchain when rustup has one, else the default toolchain with
# RUSTC_BOOTSTRAP=1, which is how CI machines with only stable build it.
#
# Environment:
#   FUZZ_TOOLCHAIN  force a toolchain (e.g. `stable` to test the bootstrap path)
#   FUZZ_SECONDS    seconds of fuzzing per target (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."

# The crates whose fuzz/ directory holds cargo-fuzz targets, each its own
# workspace (so the root workspace never builds libFuzzer).
crates=(protocol engine)

seconds="${FUZZ_SECONDS:-10}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain="${FUZZ_TOOLCHAIN:-}"
if [[ -z "$toolchain" ]] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain list | grep -q '^nightly'; then
    toolchain=nightly
fi
if [[ -n "$toolchain" ]]; then
    export RUSTUP_TOOLCHAIN="$toolchain"
fi
if [[ "$toolchain" != nightly* ]]; then
    # Lets a stable rustc accept the -Z flags cargo-fuzz passes.
    export RUSTC_BOOTSTRAP=1
fi
echo "==> toolchain: $(rustc --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}"

# Debug assertions catch overflow and broken invariants that release hides.
flags=(--debug-assertions)

start=$SECONDS
for crate in "${crates[@]}"; do
    echo "==> building $crate/fuzz"
    (cd "$crate" && cargo fuzz build "${flags[@]}")
done
echo "==> built in $((SECONDS - start)) s"

# New inputs go to a scratch directory (libFuzzer writes to the first corpus
# it is given); the committed seeds are only read.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for crate in "${crates[@]}"; do
    for target in $(cd "$crate" && cargo fuzz list); do
        echo "==> fuzzing $crate/$target for ${seconds} s"
        mkdir -p "$scratch/$crate/$target"
        seeds=()
        if [[ -d "$crate/fuzz/corpus/$target" ]]; then
            seeds=("fuzz/corpus/$target")
        fi
        log="$scratch/$crate/$target.log"
        if ! (cd "$crate" && cargo fuzz run "${flags[@]}" "$target" "$scratch/$crate/$target" "${seeds[@]}" -- \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048) >"$log" 2>&1; then
            grep -E -A2 'panicked at' "$log" >&2 || true
            tail -n 20 "$log" >&2
            echo "!! $crate/$target failed; the crashing input is in $crate/fuzz/artifacts/$target/" >&2
            exit 1
        fi
        grep -E '^Done [0-9]+ runs' "$log" || tail -n 3 "$log"
    done
done
echo "==> all fuzz targets ran clean in $((SECONDS - start)) s"
