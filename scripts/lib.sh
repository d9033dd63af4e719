# Shared by the scripts in this folder (source it, do not run it).

# A root shell entered without a login (`su` without `-`, some sudo
# configurations) may lack the sbin directories, where iptables, sysctl,
# bird and swanctl live: they would look missing, and be installed again.
case ":$PATH:" in
    *:/usr/sbin:*) ;;
    *) export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac

# Waits for the dpkg lock (a freshly booted cloud machine runs its daily
# apt jobs first) instead of failing at once.
APT_GET=(apt-get -o DPkg::Lock::Timeout=600)

# apt-get update, waiting (up to 10 minutes) for the package lists' lock,
# which DPkg::Lock::Timeout does not cover; any other failure fails at once.
apt_update() {
    local tries=0 err
    while ! err=$("${APT_GET[@]}" update -qq 2>&1); do
        case "$err" in
            *"Could not get lock"*) ;;
            *)
                echo "$err" >&2
                return 1
                ;;
        esac
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "$err" >&2
            return 1
        fi
        [ "$tries" -eq 1 ] && echo "== waiting for another apt-get to finish"
        sleep 10
    done
}

# Installs the Debian package of each command (or, for an absolute path,
# file) that is missing.
# Usage: install_missing command:package /path/to/file:package ...
# Fails when something is missing and we are not root.
install_missing() {
    local need=() pair what
    for pair in "$@"; do
        what=${pair%%:*}
        case $what in
        /*) [ -e "$what" ] || need+=("${pair#*:}") ;;
        *) command -v "$what" >/dev/null || need+=("${pair#*:}") ;;
        esac
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "== not root: cannot install ${need[*]}" >&2
        return 1
    fi
    echo "== installing ${need[*]}"
    apt_update || return 1
    DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# Rust: the toolchain rust-toolchain.toml names, through rustup (Debian's
# own cargo is older than the workspace's rust-version). A root shell that
# read no login profile lacks ~/.cargo/bin in its PATH: that comes first.
# Installs rustup, and the C compiler and linker that rustc, ring and
# aws-lc need, when missing; fails when it cannot (not root, no network).
ensure_rust() {
    if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
        . "$HOME/.cargo/env"
    fi
    install_missing cc:build-essential || return 1
    local toolchain
    toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
    if command -v rustup >/dev/null; then
        # rustup 1.28.0 does not install a toolchain a project names by
        # itself; the later ones do, but only when cargo first runs.
        if ! rustup toolchain list | grep -q "^$toolchain-"; then
            echo "== installing Rust $toolchain with rustup"
            rustup toolchain install "$toolchain" --profile minimal -c rustfmt,clippy >/dev/null || return 1
        fi
        return 0
    fi
    command -v cargo >/dev/null && return 0
    install_missing curl:curl /etc/ssl/certs/ca-certificates.crt:ca-certificates || return 1
    echo "== installing Rust $toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y -q --profile minimal --default-toolchain "$toolchain" -c rustfmt,clippy >/dev/null || return 1
    . "$HOME/.cargo/env"
}

# Installs packages while none may start a service: a policy-rc.d that
# answers 101 ("forbidden"), which invoke-rc.d and deb-systemd-invoke obey.
# Then DISABLE (a function, given the packages) turns off the boot-time
# start of their services before the policy goes, also when the install is
# interrupted (Ctrl-C, a time limit): a package configured by then has
# enabled its service, and a rerun finds its files and installs nothing.
# A machine that has a policy-rc.d already (containers do; it usually says
# the same) keeps its own; one this function left behind (a SIGKILLed run)
# is taken as its own again. Two runs at once (test.sh in two checkouts)
# take turns on a lock, so neither removes the policy under the other's
# install; it is in /run, where only root writes, and apt does not inherit
# it, so nothing apt leaves running holds it. Ended by SIGINT or SIGTERM,
# it returns 130 or 143 (callers end the run on 128 and up).
# Usage: install_without_service_starts DISABLE PACKAGE...
install_without_service_starts() {
    local disable="$1" policy=/usr/sbin/policy-rc.d lock=/run/causeway-install.lock
    local marker="# Written by causeway scripts/lib.sh for one apt-get run: no service starts."
    shift
    (
        if ! flock -w 900 9; then
            echo "== another run has held $lock for 15 minutes: giving up" >&2
            exit 1
        fi
        trap 'exit 130' INT
        trap 'exit 143' TERM
        # `|| true`: under errexit a failing DISABLE would end the trap
        # before the policy goes, and no service could start afterwards.
        if [ -e "$policy" ] && ! grep -qxF "$marker" "$policy"; then
            trap '"$disable" "$@" || true' EXIT
        else
            trap '"$disable" "$@" || true; rm -f "$policy"' EXIT
            printf '#!/bin/sh\n%s\nexit 101\n' "$marker" >"$policy"
            chmod 755 "$policy"
        fi
        DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y -qq --no-install-recommends "$@" >/dev/null 9>&-
    ) 9>"$lock"
}

# strongSwan as the IPsec test peer (lab/src/strongswan.rs), and tshark and
# scapy (independent ESP decoders; scapy's AES ciphers come from
# python3-cryptography, only a Recommends of python3-scapy). The lab runs its own charons in private
# mount namespaces and wants no system one, but strongswan-charon depends on
# strongswan-starter, whose postinst on a first install runs `update-rc.d
# ipsec defaults` and `invoke-rc.d ipsec start` (under systemd it enables and
# starts strongswan-starter.service): a charon in the root namespace. So the
# install runs without service starts (above), the boot-time start is then
# disabled (disable_ipsec_services), and a system charon running anyway is
# stopped with `ipsec stop`.
# Fails when something is missing and we are not root.
install_ipsec_tools() {
    local need=() pair lib=/usr/lib/ipsec
    for pair in $lib/charon:strongswan-charon /usr/sbin/swanctl:strongswan-swanctl \
        $lib/plugins/libstrongswan-kernel-libipsec.so:libcharon-extra-plugins \
        $lib/plugins/libstrongswan-gcm.so:libstrongswan-standard-plugins \
        $lib/plugins/libstrongswan-curve25519.so:libstrongswan-extra-plugins \
        /usr/bin/tshark:tshark /usr/lib/python3/dist-packages/scapy:python3-scapy \
        /usr/lib/python3/dist-packages/cryptography:python3-cryptography; do
        [ -e "${pair%%:*}" ] || need+=("${pair#*:}")
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "== not root: cannot install ${need[*]}" >&2
        return 1
    fi
    echo "== installing ${need[*]} (starting no system charon)"
    apt_update || return 1
    install_without_service_starts disable_ipsec_services "${need[@]}"
}

# Given the packages just installed: turns off the system charon that
# strongswan-charon brings. An operator's own strongSwan, installed before,
# is left as it was.
disable_ipsec_services() {
    case " $* " in
        *" strongswan-charon "*) ;;
        *) return 0 ;;
    esac
    if [ -x /etc/init.d/ipsec ]; then
        update-rc.d ipsec disable >/dev/null 2>&1 || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl disable --now strongswan-starter.service >/dev/null 2>&1 || true
    fi
    if [ -e /run/starter.charon.pid ] || [ -e /run/charon.pid ]; then
        echo "== a system charon was started anyway: stopping it (ipsec stop)"
        ipsec stop >/dev/null 2>&1 || true
    fi
}

# etcd (the fleet's registry in the namespace tests: lab/src/etcd.rs) and
# BIRD 2 (the routing daemon exporting causewayd's kernel routes over BGP:
# lab/src/bird.rs). The lab starts its own etcd members and birds inside
# namespaces, with their data, configuration, control socket and pid file in
# a temporary directory, and wants neither daemon running on the host. Both
# packages' postinsts enable their service and start it (`update-rc.d NAME
# defaults` + `invoke-rc.d NAME start`; under systemd `deb-systemd-helper
# enable` + `deb-systemd-invoke start`): an etcd listening on the host's
# 127.0.0.1:2379 and a bird reading /etc/bird/bird.conf. So, as for
# strongSwan, the install runs without service starts, the services are then
# disabled (disable_fleet_services), and one running anyway is stopped.
# Fails when something is missing and we are not root.
install_fleet_tools() {
    local need=() pair pkg
    for pair in /usr/bin/etcd:etcd-server /usr/bin/etcdctl:etcd-client /usr/sbin/bird:bird2 /usr/sbin/birdc:bird2; do
        pkg="${pair#*:}"
        [ -e "${pair%%:*}" ] && continue
        case " ${need[*]} " in *" $pkg "*) ;; *) need+=("$pkg") ;; esac
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "== not root: cannot install ${need[*]}" >&2
        return 1
    fi
    echo "== installing ${need[*]} (starting no system etcd or bird)"
    apt_update || return 1
    install_without_service_starts disable_fleet_services "${need[@]}"
}

# Given the packages just installed: turns off their etcd and bird
# services. Only those: an operator's own etcd or bird, installed before,
# is left as it was.
disable_fleet_services() {
    local pkg new=()
    for pkg in "$@"; do
        case "$pkg" in
            etcd-server) new+=(etcd) ;;
            bird2) new+=(bird) ;;
        esac
    done
    for pkg in "${new[@]}"; do
        if [ -x "/etc/init.d/$pkg" ]; then
            update-rc.d "$pkg" disable >/dev/null 2>&1 || true
        fi
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$pkg" ]; then
            # Stops one started anyway (a machine whose policy allowed it);
            # does nothing when none runs (bird's script has no `status`).
            "/etc/init.d/$pkg" stop >/dev/null 2>&1 || true
        fi
    done
}

# protoc and the well-known .proto files it imports (descriptor.proto and
# friends are in libprotobuf-dev, only a Recommends of protobuf-compiler,
# which --no-install-recommends leaves out): the etcd client generates its
# gRPC code at build time and needs both.
PROTOC_TOOLS=(protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev)
