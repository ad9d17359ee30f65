#!/usr/bin/env bash
# Installs the system packages kgym needs, when missing (Debian/Ubuntu).
# Idempotent: does nothing when everything is there.
set -euo pipefail

PACKAGES=(
  # kernel builds (python3: the kernel's compile_commands.json generator)
  build-essential flex bison bc libelf-dev libssl-dev cpio ccache git python3
  # the offline kernel source used by the quickstart and the tests
  linux-source-6.1
  # VMs, their userspace, symbolization (binutils: nm, addr2line, objdump)
  qemu-system-x86 busybox-static openssh-client binutils
  # the disk-image test: an ext4 image with dropbear as its SSH server
  e2fsprogs dropbear-bin
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "kgym setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "kgym setup: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi
