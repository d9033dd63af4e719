# Shared by the scripts in this folder (source it, do not run it).

# Installs the Debian package of each command that is missing.
# Usage: install_missing command:package ...
# Fails when something is missing and we are not root.
install_missing() {
    local need=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "== not root: cannot install ${need[*]}" >&2
        return 1
    fi
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}
