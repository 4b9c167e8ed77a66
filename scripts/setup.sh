#!/usr/bin/env bash
# Installs everything labctl needs to build, run and test on Debian 12 (and
# derivatives): apt packages, the rust-src component, and bpf-linker built
# against Debian's LLVM 22. Idempotent: what is present is skipped.
#
#   scripts/setup.sh          install what is missing
#   scripts/setup.sh --check  only report; exit 1 if something is missing
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
LLVM_PREFIX=/usr/lib/llvm-${LLVM_MAJOR}

# Build: bpf-linker's LLVM, protoc for the CRI client's and Hubble's
# protobufs (libprotobuf-dev: the google/protobuf/*.proto they import). Run and
# test: the peer tools the tests compare against, iproute2 for learners, and
# what a kind-like node in the tests is made of (containerd with its CRI
# plugin, runc, umoci to pack the pause image, a static libc for it), and
# the readers the observability outputs are tested with (tshark for --pcap,
# prometheus and its promtool for the metrics endpoint), and perf, a peer of
# `cargo xtask bench trace`.
APT_PACKAGES=(
  "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" zlib1g-dev libzstd-dev
  protobuf-compiler libprotobuf-dev
  iproute2 conntrack iptables nftables containernetworking-plugins
  iperf3 bpftrace dropwatch bpftool util-linux ethtool procps
  containerd runc umoci libc6-dev tcpdump
  tshark prometheus linux-perf
)

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

missing=()

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "installing system packages needs root: run this script as root or install sudo"
  fi
}

# --- apt packages -------------------------------------------------------------
apt_missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    apt_missing+=("$pkg")
  fi
done
if [ "${#apt_missing[@]}" -gt 0 ]; then
  if [ "$check_only" -eq 1 ]; then
    missing+=("apt packages: ${apt_missing[*]}")
  else
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${apt_missing[*]} with your package manager"
    say "installing apt packages: ${apt_missing[*]}"
    as_root apt-get update -qq || die "apt-get update failed: check the package mirrors in /etc/apt/sources.list*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null \
      || die "apt-get install ${apt_missing[*]} failed (llvm-${LLVM_MAJOR}-dev comes from Debian 12's security/backports suites)"
  fi
else
  say "apt packages present"
fi

# --- Rust ---------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs) first"
if command -v rustup >/dev/null 2>&1; then
  if rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    say "rust-src present"
  elif [ "$check_only" -eq 1 ]; then
    missing+=("rustup component rust-src")
  else
    say "installing rustup component rust-src (to build core for bpfel-unknown-none)"
    rustup component add rust-src || die "rustup component add rust-src failed"
  fi
else
  say "rustup not found: make sure your toolchain ships rust-src for -Z build-std=core"
fi

# --- bpf-linker ---------------------------------------------------------------
rustc_llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [ -n "$rustc_llvm" ] && [ "$rustc_llvm" -gt "$LLVM_MAJOR" ]; then
  die "rustc uses LLVM $rustc_llvm, newer than Debian's LLVM $LLVM_MAJOR that bpf-linker is built against: install llvm-${rustc_llvm}-dev and set LLVM_MAJOR in this script"
fi
linker_ok=0
if command -v bpf-linker >/dev/null 2>&1; then
  have=$(bpf-linker --version 2>/dev/null | awk '{print $2}')
  llvm=$(ldd "$(command -v bpf-linker)" 2>/dev/null | sed -n 's/.*libLLVM\.so\.\([0-9]*\).*/\1/p' | head -n1)
  if [ "$have" = "$BPF_LINKER_VERSION" ] && [ "${llvm:-0}" -ge "${rustc_llvm:-0}" ]; then
    linker_ok=1
    say "bpf-linker $have (LLVM ${llvm:-?}) present"
  else
    say "bpf-linker $have with LLVM ${llvm:-?} does not fit (want $BPF_LINKER_VERSION, LLVM >= ${rustc_llvm:-?})"
  fi
fi
if [ "$linker_ok" -eq 0 ]; then
  if [ "$check_only" -eq 1 ]; then
    missing+=("bpf-linker $BPF_LINKER_VERSION built against LLVM $LLVM_MAJOR")
  else
    say "building bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR (a few minutes)"
    LLVM_PREFIX=$LLVM_PREFIX PATH="$LLVM_PREFIX/bin:$PATH" \
      cargo install --locked --force bpf-linker --version "$BPF_LINKER_VERSION" \
        --no-default-features --features "llvm-${LLVM_MAJOR}" \
      || die "building bpf-linker failed: check that llvm-${LLVM_MAJOR}-dev and libpolly-${LLVM_MAJOR}-dev are installed"
  fi
fi

if [ "$check_only" -eq 1 ]; then
  if [ "${#missing[@]}" -gt 0 ]; then
    for m in "${missing[@]}"; do say "missing: $m"; done
    say "run scripts/setup.sh (or cargo xtask setup) to install them"
    exit 1
  fi
  say "everything is installed"
else
  say "done"
fi
