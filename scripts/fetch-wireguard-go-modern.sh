#!/usr/bin/env bash
# Fetches the modern wireguard-go (0.0.20231211, with TUN and UDP offloads)
# from Debian bookworm-backports into a private directory, for
# netns-compare's implementation `wireguard-go-modern`:
#   /var/cache/causeway-bench/wireguard-go-0.0.20231211/usr/bin/wireguard-go
# It uses a private apt configuration (its own sources list, package lists
# and cache in a temporary directory, no /etc/apt/sources.list.d), so the
# machine's apt sources and state stay as they were, and it only unpacks
# the .deb (dpkg-deb -x): Debian's own wireguard-go is not replaced.
# apt-get checks the package against the backports Release file, signed
# with Debian's archive key. Does nothing when the binary is already there.
# Prints the binary's path. Needs root (for /var/cache; set
# CAUSEWAY_BENCH_CACHE to use another directory).
set -euo pipefail
VERSION=0.0.20231211
CACHE=${CAUSEWAY_BENCH_CACHE:-/var/cache/causeway-bench}
DEST=$CACHE/wireguard-go-$VERSION
BIN=$DEST/usr/bin/wireguard-go
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
echo "== fetching wireguard-go $VERSION from bookworm-backports (private apt configuration)" >&2
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb" "$tmp/root"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
    >"$tmp/sources.list"
# apt downloads as the unprivileged user _apt when it can write there.
if id _apt >/dev/null 2>&1; then
    chmod 755 "$tmp"
    chown -R _apt "$tmp/lists" "$tmp/cache" "$tmp/deb"
fi
apt_private=(
    -o "Dir::Etc::SourceList=$tmp/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::PreferencesParts=/dev/null"
    -o "Dir::State::Lists=$tmp/lists"
    -o "Dir::Cache=$tmp/cache"
)
apt-get -qq "${apt_private[@]}" update
(cd "$tmp/deb" && apt-get -qq "${apt_private[@]}" download wireguard-go/bookworm-backports)
deb=$(ls "$tmp"/deb/wireguard-go_*.deb)
got=$(dpkg-deb -f "$deb" Version)
case "$got" in
"$VERSION"-*) ;;
*)
    echo "bookworm-backports has wireguard-go $got, not $VERSION: update VERSION in $0" >&2
    exit 1
    ;;
esac
dpkg-deb -x "$deb" "$tmp/root"
# The Debian version, for the results: this build's own --version says
# v0.0.20230223 (upstream did not bump version.go for the 20231211 tag).
echo "$got" >"$tmp/root/DEBIAN-VERSION"
"$tmp/root/usr/bin/wireguard-go" --version >/dev/null
# Appears complete or not at all.
mv "$tmp/root" "$DEST"
echo "$BIN"
