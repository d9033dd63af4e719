#!/usr/bin/env bash
# Runs every Causeway test: formatting, lints, unit and interoperability
# tests, the network-namespace integration tests (one test binary, `--test
# netns`), a soak, the fuzz corpus replay and a short run of every fuzz
# target. Installs what the tests need first, so run it as root.
#
# Usage: scripts/test.sh [--quick]
#
#   --quick  an unprivileged run, asked for on purpose: sets
#            CAUSEWAY_TESTS_QUICK=1, so the namespace tests skip instead
#            of failing when they cannot run (not root, a tool missing):
#            they return at once and count as passed (`--nocapture` shows
#            each "skipped ..." line), and the UAPI and control API corpus
#            replays do not apply their inputs to an interface; no soak,
#            no cargo-fuzz run.
#            Without --quick, a test that cannot run fails the run.
#
# Variables (CI may set them for the long runs):
#   SOAK_SECONDS  length of the soak (default 120; 600 for the long soak)
#   FUZZ_SECONDS  cargo-fuzz time per target (default 20; 0: replay only)
#   TEST_MINUTES  the whole run's time budget (default 85, inside CI's 90)
#
# Each step prints its duration, and the run ends with a summary of them.
# Each long step has a time limit (`within`), far above its usual length
# (the README gives them) and cut to what is left of TEST_MINUTES, so a
# hung test ends the run with the step named instead of running into CI's
# 90 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        *)
            echo "usage: scripts/test.sh [--quick]" >&2
            exit 2
            ;;
    esac
done
export SOAK_SECONDS="${SOAK_SECONDS:-120}"
export FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
TEST_MINUTES="${TEST_MINUTES:-85}"
case "$TEST_MINUTES" in
    '' | *[!0-9]*)
        echo "TEST_MINUTES must be a whole number of minutes, not \"$TEST_MINUTES\"" >&2
        exit 2
        ;;
esac
# Base 10: arithmetic would read 085 as octal, and fail.
TEST_MINUTES=$((10#$TEST_MINUTES))
if [ "$quick" -eq 1 ]; then
    export CAUSEWAY_TESTS_QUICK=1
    FUZZ_SECONDS=0
else
    unset CAUSEWAY_TESTS_QUICK
fi

summary=()
step_name=""
step_start=$SECONDS
run_start=$SECONDS
# Starts a step: ends the previous one (its duration goes to the summary).
step() {
    end_step
    step_name="$1"
    step_start=$SECONDS
    echo "== $1"
}
end_step() {
    if [ -n "$step_name" ]; then
        local d=$((SECONDS - step_start))
        summary+=("$(printf '%4dm%02ds  %s' $((d / 60)) $((d % 60)) "$step_name")")
        echo "   ($((d / 60))m$((d % 60))s)"
    fi
    step_name=""
}

# On exit, the durations so far, and the step that failed if one did.
finish() {
    local status=$? failed="$step_name" total=$((SECONDS - run_start))
    end_step
    if [ "$status" -eq 0 ]; then
        echo "== all tests passed in $((total / 60))m$((total % 60))s:"
    else
        echo "== FAILED in step \"$failed\" after $((total / 60))m$((total % 60))s:" >&2
    fi
    [ "${#summary[@]}" -eq 0 ] || printf '%s\n' "${summary[@]}"
    exit "$status"
}
trap finish EXIT

# Runs a step's command with a time limit of $1 minutes, or what is left of
# the run's TEST_MINUTES if that is less (the steps' own limits add up to
# more than CI allows the whole run): SIGTERM to its process group at the
# limit, SIGKILL 30 s later. timeout runs in a
# process group of its own, which a terminal's Ctrl-C does not reach, and
# bash would wait for it and go on to the next step: an interrupt here is
# passed on to it as SIGTERM, and the run ends.
within() {
    local minutes="$1"
    shift
    local status=0 pid limit=$((minutes * 60)) left
    left=$((TEST_MINUTES * 60 - (SECONDS - run_start)))
    [ "$left" -ge "$limit" ] || limit=$left
    if [ "$limit" -le 0 ]; then
        echo "== step \"$step_name\": nothing is left of the run's ${TEST_MINUTES} minutes" >&2
        return 124
    fi
    timeout -k 30 "${limit}s" "$@" &
    pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null; interrupted=1' INT TERM
    # A trapped signal ends `wait` early: wait again until timeout is gone.
    interrupted=0
    while :; do
        status=0
        wait "$pid" || status=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - INT TERM
    if [ "$interrupted" -eq 1 ]; then
        echo "== step \"$step_name\" interrupted" >&2
        return 130
    fi
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        if [ "$limit" -lt $((minutes * 60)) ]; then
            echo "== step \"$step_name\" still ran when the run's ${TEST_MINUTES} minutes were up: stopped" >&2
        else
            echo "== step \"$step_name\" still ran after ${minutes} minutes: stopped" >&2
        fi
    fi
    return "$status"
}

. scripts/lib.sh

# Runs an install ($3...) for the tests named $1, which need $2: a failure
# fails the run, or with --quick lets those tests skip; an install ended by
# a signal (status 128 and up: Ctrl-C, SIGTERM) ends the run either way.
installed_or_skip() {
    local tests="$1" needs="$2" status=0
    shift 2
    "$@" || status=$?
    [ "$status" -eq 0 ] && return 0
    if [ "$status" -ge 128 ]; then
        echo "== installing for the $tests tests: interrupted" >&2
        exit "$status"
    fi
    if [ "$quick" -eq 0 ]; then
        echo "the $tests tests need $needs and root: run as root, or scripts/test.sh --quick" >&2
        exit 1
    fi
    echo "== --quick: the $tests tests will skip"
}

step "tools the tests need"
installed_or_skip namespace "these tools" install_missing iperf3:iperf3 wireguard-go:wireguard-go \
    wg:wireguard-tools ncat:ncat iptables:iptables ip:iproute2 ping:iputils-ping sysctl:procps \
    timeout:coreutils "${PROTOC_TOOLS[@]}" openssl:openssl c++:g++
# strongSwan (the IPsec peer of the strongswan_pair tests), tshark and
# scapy; installed so that no system charon starts (scripts/lib.sh).
installed_or_skip IPsec strongSwan install_ipsec_tools
# etcd and BIRD 2 (the fleet tests' registry and routing daemon), installed
# so that neither starts as a system service (scripts/lib.sh).
installed_or_skip fleet "etcd, BIRD" install_fleet_tools
if [ "$quick" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
    echo "== --quick, not root: the namespace tests skip (and count as passed)"
fi
if ! ensure_rust; then
    echo "Rust is missing and could not be installed: install it with rustup (https://rustup.rs), then rerun" >&2
    exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
step "cargo clippy"
within 30 cargo clippy --workspace --all-targets --quiet -- -D warnings
# The fuzz crate shares the dependencies (same versions): checked once.
within 15 cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target --all-targets --quiet -- -D warnings
# One build of the binaries (the netns tests run the real causewayd) and of
# the test binaries, so links of both share the cores.
step "cargo build --release: binaries and test binaries"
within 40 cargo build --release --workspace --bins --tests --quiet
# Select targets as the build above did (every test target of the
# workspace): `-p causeway-netns-tests` or `--test netns` would resolve
# features differently and rebuild part of the tree first.
step "cargo test: unit, interoperability and network-namespace tests"
within 40 cargo test --workspace --release 2>&1
if [ "$quick" -eq 0 ]; then
    step "soak: ${SOAK_SECONDS} s of traffic with peer and reload churn"
    within $((SOAK_SECONDS / 60 + 10)) cargo test --workspace --release --tests -- --ignored soak:: --nocapture 2>&1
fi
step "fuzzing (${FUZZ_SECONDS} s per target)"
# Seven targets two at a time, plus the builds and the corpus replay.
within $((FUZZ_SECONDS * 4 / 60 + 25)) scripts/fuzz.sh
