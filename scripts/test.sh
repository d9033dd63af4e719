#!/usr/bin/env bash
# Runs every Causeway test: formatting, lints, unit and interoperability
# tests, and (as root) the network-namespace integration tests.
# Installs what the tests need first. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
install_missing iperf3:iperf3 wireguard-go:wireguard-go wg:wireguard-tools ncat:ncat iptables:iptables \
    ip:iproute2 ping:iputils-ping || echo "== namespace tests will be skipped"
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust with rustup (https://rustup.rs), then rerun" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --quiet -- -D warnings
echo "== cargo build --release (the netns tests run the real causewayd)"
cargo build --release --workspace --bins --quiet
echo "== cargo test"
cargo test --workspace --release 2>&1
echo "== soak: ${SOAK_SECONDS:-600} s of traffic with peer and reload churn"
cargo test --release -p causeway-netns-tests --test soak -- --ignored --nocapture 2>&1
echo "== fuzzing"
scripts/fuzz.sh
