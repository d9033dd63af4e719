#!/usr/bin/env bash
# Replays the fuzz corpus (stable toolchain), then fuzzes every target for
# FUZZ_SECONDS each (default 20; 0 replays the corpus only; longer runs,
# such as 300, find more) with cargo-fuzz and AddressSanitizer, two targets
# at a time. New inputs go to a scratch folder, so the committed corpus only
# changes by hand (`cargo fuzz cmin`). A crash fails the run and leaves its
# input under fuzz/artifacts/<target>/: fix it, then copy the input to
# fuzz/regressions/<target>/ so the replay keeps checking it.
# The replay of the UAPI and control API inputs needs root (a network
# namespace of its own) and fails without it, unless CAUSEWAY_TESTS_QUICK=1
# (scripts/test.sh --quick) lets it go on without applying them.
# Usage: scripts/fuzz.sh [target ...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

targets=("$@")
[ "${#targets[@]}" -eq 0 ] && targets=(wire uapi control_api config esp ike super_packet)
seconds="${FUZZ_SECONDS:-20}"

echo "== fuzz corpus replay (stable, debug build: overflow checks and debug assertions on)"
# In the workspace's target folder: build scripts and proc macros are
# shared with its clippy run.
if ! out="$(cargo test --target-dir ../target 2>&1)"; then
    echo "$out" >&2
    exit 1
fi
echo "$out" | grep -E "^test .* ok$|not applied to an interface" | sed 's/^/   /'
if [ "$seconds" -eq 0 ]; then
    echo "== fuzzing skipped (FUZZ_SECONDS=0)"
    exit 0
fi

# cargo-fuzz needs nightly (sanitizer flags): installed beside the
# toolchain rust-toolchain.toml names, which the rest of the build uses. Without rustup there is no way to
# add it, and fuzzing that cannot run fails the run rather than pass it.
if ! cargo +nightly --version >/dev/null 2>&1; then
    if ! command -v rustup >/dev/null; then
        echo "== cargo-fuzz needs a nightly toolchain, and without rustup none can be installed (FUZZ_SECONDS=0 replays the corpus only)" >&2
        exit 1
    fi
    echo "== installing the nightly toolchain (for cargo-fuzz)"
    rustup toolchain install nightly --profile minimal >/dev/null
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
fi
echo "== cargo fuzz build"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Its last line on success; on failure, the compiler's errors with it.
if ! cargo +nightly fuzz build -O >"$scratch/build.log" 2>&1; then
    tail -n 40 "$scratch/build.log" >&2
    exit 1
fi
tail -n 1 "$scratch/build.log"
run() {
    local t="$1"
    mkdir -p "$scratch/$t"
    if cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
        echo "   $t: $(grep -E '^Done [0-9]+ runs' "$scratch/$t.log" | tail -n 1), no failure"
    else
        echo "   $t: FAILED; input kept in fuzz/artifacts/$t/" >&2
        grep -E -A12 "panicked|ERROR: " "$scratch/$t.log" | head -n 40 >&2
        return 1
    fi
}
echo "== fuzzing ${targets[*]} for ${seconds}s each"
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    for t in "${targets[@]:i:2}"; do
        run "$t" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || status=1; done
done
exit "$status"
