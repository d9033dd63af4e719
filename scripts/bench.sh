#!/usr/bin/env bash
# The side-by-side comparison: Causeway, the modern wireguard-go (0.0.20231211
# from bookworm-backports, with TUN and UDP offloads), Debian's wireguard-go
# and boringtun-cli, interleaved over rounds (strongSwan and Causeway's
# IPsec too when asked: --impls causeway-esp,causeway-esp-raw,causeway,
# strongswan --reference causeway-esp). Writes
# benches/results/compare-<time>.{md,json,svg}.
# Needs root. Installs iperf3, wireguard-go, wireguard-tools, iptables,
# strongSwan with kernel-libipsec, tshark and scapy (apt-get; no system
# charon is started, see install_ipsec_tools in scripts/lib.sh) and
# boringtun-cli (cargo install) if missing, and, for a run that measures it, unpacks the
# modern wireguard-go into /var/cache/causeway-bench without installing it
# (scripts/fetch-wireguard-go-modern.sh). Extra arguments go to
# netns-compare (try --help), e.g. scripts/bench.sh --rounds 5, or
# scripts/bench.sh --topology direct,routed for both topologies (the routed
# one puts a host behind each gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing iperf3:iperf3 wireguard-go:wireguard-go wg:wireguard-tools ping:iputils-ping iptables:iptables "${PROTOC_TOOLS[@]}"
install_ipsec_tools
[ -x "${HOME:-/root}/.cargo/bin/boringtun-cli" ] || cargo install --locked boringtun-cli ||
    echo "== boringtun-cli could not be installed: leave boringtun out of --impls" >&2
# The modern wireguard-go is fetched only for a run that measures it: the
# default list has it; an --impls without it (or a --replot) does not.
measures_modern() {
    local prev= impls=default arg
    for arg in "$@"; do
        case "$arg" in
            --replot | --replot=*) return 1 ;;
            --impls=*) impls=${arg#--impls=} ;;
            *) [ "$prev" = --impls ] && impls=$arg ;;
        esac
        prev=$arg
    done
    [ "$impls" = default ] || [[ ",$impls," == *,wireguard-go-modern,* ]]
}
modern_args=()
if measures_modern "$@"; then
    modern_args=(--wireguard-go-modern "$(scripts/fetch-wireguard-go-modern.sh)")
fi
cargo build --release --quiet -p causeway-gateway -p causeway-benches
echo "== criterion micro-benchmarks"
cargo bench --quiet -p causeway-benches 2>&1 | grep -E "^[a-z_/0-9-]+ |time:|thrpt:" || true
echo "== namespace comparison"
exec ./target/release/netns-compare "${modern_args[@]}" "$@"
