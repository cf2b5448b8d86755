#!/usr/bin/env bash
# System tools for cross-compiling to aarch64 and running the result under emulation (the export
# tests and `tvmconv export --check`): Debian's aarch64 cross compiler and qemu user-mode.
# Idempotent: does nothing when both are already there.
set -euo pipefail
if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static make >/dev/null
