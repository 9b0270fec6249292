#!/usr/bin/env bash
# Install the Debian packages the testbed needs on the host (idempotent).
# Only missing packages are installed; when not root, print the exact command.
set -euo pipefail
PACKAGES=(qemu-system-x86 qemu-utils cpio flex bison build-essential dpkg-dev mmdebstrap
          busybox-static python3-venv python3-debian xz-utils zstd kmod bc git ca-certificates chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[host-deps] all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi
cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "[host-deps] missing Debian packages: ${missing[*]}" >&2
  echo "[host-deps] run as root:  sudo sh -c '$cmd'" >&2
  exit 1
fi
echo "[host-deps] installing: ${missing[*]}"
sh -c "$cmd"
