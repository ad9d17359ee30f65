#!/usr/bin/env bash
# The kBench loop end to end on this machine: build a kernel, inject a bug,
# reproduce the crash, evaluate a fix. Installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo run --release --example quickstart -- "$@"
