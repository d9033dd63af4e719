#!/usr/bin/env bash
# Builds causewayd and runs its two-site demo in network namespaces.
# Needs root (namespaces); installs iproute2, iperf3 and ping if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust with rustup, then rerun" >&2
    exit 1
fi
cargo build --release --quiet -p causeway-gateway
exec ./target/release/causewayd demo
