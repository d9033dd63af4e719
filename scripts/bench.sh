#!/usr/bin/env bash
# The side-by-side comparison: Causeway, Debian's wireguard-go and
# boringtun-cli in the same two-namespace topology, interleaved over
# rounds. Writes benches/results/compare-<time>.{md,json,svg}.
# Needs root. Installs iperf3, wireguard-go, wireguard-tools (apt-get) and
# boringtun-cli (cargo install) if missing. Extra arguments go to
# netns-compare (try --help), e.g. scripts/bench.sh --rounds 5.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v wireguard-go >/dev/null || need_apt+=(wireguard-go)
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v ping >/dev/null || need_apt+=(iputils-ping)
if [ "${#need_apt[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
[ -x "${HOME:-/root}/.cargo/bin/boringtun-cli" ] || cargo install --locked boringtun-cli
cargo build --release --quiet -p causeway-gateway -p causeway-benches
echo "== criterion micro-benchmarks"
cargo bench --quiet -p causeway-benches 2>&1 | grep -E "^[a-z_/0-9-]+ |time:|thrpt:" || true
echo "== namespace comparison"
exec ./target/release/netns-compare "$@"
