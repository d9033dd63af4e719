#!/usr/bin/env bash
# Builds causewayd and the demo, and runs the two-site demo in network
# namespaces. Needs root (namespaces); installs iproute2, iperf3 and ping
# if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# protoc: the etcd client (registry) generates its gRPC code at build time.
install_missing ip:iproute2 iperf3:iperf3 ping:iputils-ping "${PROTOC_TOOLS[@]}"
if ! ensure_rust; then
    echo "Rust is missing and could not be installed: install it with rustup (https://rustup.rs), then rerun" >&2
    exit 1
fi
cargo build --release --quiet -p causeway-gateway -p causeway-lab --bins
exec ./target/release/causeway-demo
