#!/usr/bin/env bash
# The side-by-side comparison: Causeway, Debian's wireguard-go and
# boringtun-cli in the same two-namespace topology, interleaved over
# rounds. Writes benches/results/compare-<time>.{md,json,svg}.
# Needs root. Installs iperf3, wireguard-go, wireguard-tools (apt-get) and
# boringtun-cli (cargo install) if missing. Extra arguments go to
# netns-compare (try --help), e.g. scripts/bench.sh --rounds 5.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing iperf3:iperf3 wireguard-go:wireguard-go wg:wireguard-tools ping:iputils-ping
[ -x "${HOME:-/root}/.cargo/bin/boringtun-cli" ] || cargo install --locked boringtun-cli
cargo build --release --quiet -p causeway-gateway -p causeway-benches
echo "== criterion micro-benchmarks"
cargo bench --quiet -p causeway-benches 2>&1 | grep -E "^[a-z_/0-9-]+ |time:|thrpt:" || true
echo "== namespace comparison"
exec ./target/release/netns-compare "$@"
