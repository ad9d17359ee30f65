#!/usr/bin/env bash
# Runs every test of the workspace on this machine: installs missing system
# packages first, then builds real kernels, boots them in QEMU, etc.
# In CI (CI=true) a missing tool fails the tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --all-targets --no-fail-fast "$@"
cargo test -p kgym-core -p kgym --features kgym/gcp --no-fail-fast --test gcs --test gcs_store # GCS store vs a fake XML API
cargo test --workspace --doc
