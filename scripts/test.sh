#!/usr/bin/env bash
# Runs every Causeway test: formatting, lints, unit and interoperability
# tests, and (as root) the network-namespace integration tests.
# Installs what the tests need first. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v wireguard-go >/dev/null || need_apt+=(wireguard-go)
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v ncat >/dev/null || need_apt+=(ncat)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ping >/dev/null || need_apt+=(iputils-ping)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "== installing ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        echo "== not root: skipping install of ${need_apt[*]}; namespace tests will be skipped"
    fi
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust with rustup (https://rustup.rs), then rerun" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build --release (the netns tests run the real causewayd)"
cargo build --release --workspace --bins --quiet
echo "== cargo test"
cargo test --workspace --release 2>&1
