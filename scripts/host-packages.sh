#!/usr/bin/env bash
# Installs the host programs cxl-lab and its tests run: qemu-system-x86 and qemu-utils from the
# host release's backports (on bookworm: QEMU 10.0; one suite for both, or apt replaces the newer
# qemu-utils), debootstrap, e2fsprogs (mkfs.ext4 -d), openssh-client (per-lab keys).
# Needs root; prints what it would run otherwise.
set -euo pipefail

packages_from_backports=(qemu-system-x86 qemu-utils debootstrap)
packages=(e2fsprogs openssh-client)

. /etc/os-release
backports="${VERSION_CODENAME}-backports"
if [ "$(id -u)" -ne 0 ]; then
    echo "not root: run as root, or install by hand:" >&2
    echo "  apt-get install -t ${backports} ${packages_from_backports[*]} && apt-get install ${packages[*]}" >&2
    exit 1
fi

# Debian's backports suite is an ordinary archive suite; add it if the host lacks it.
if ! grep -rqs "${backports}" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > /etc/apt/sources.list.d/${backports}.sources <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${backports}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends -t "${backports}" "${packages_from_backports[@]}"
apt-get install -y -q --no-install-recommends "${packages[@]}"
qemu-system-x86_64 --version | head -1
