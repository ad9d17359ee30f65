#!/usr/bin/env bash
# Runs every test of the workspace on this machine: installs missing system
# packages first, then builds real kernels, boots them in QEMU, etc.
# In CI (CI=true) a missing tool fails the tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# `kgym/gcp` adds the GCS store and its tests against a fake XML API
# (kgym-core/tests/gcs.rs, tests/gcs_store.rs); `kgym/amqp` the RabbitMQ
# transport and its tests against a real broker the tests start
# (kgym-sched/tests/amqp.rs, tests/services.rs, tests/cluster.rs);
# `kgym/gce` the Compute Engine runner and its tests against fake Compute
# APIs (kgym-vm/tests/gce.rs; gce_qemu.rs, whose instances are QEMU VMs);
# one feature set for every
# step, so nothing is compiled twice.
# The stock services as real binaries: tests/signals.rs runs them
# (`cargo test --all-targets` builds examples only as test harnesses).
cargo build --workspace --examples --features kgym/gcp,kgym/amqp,kgym/gce
cargo test --workspace --all-targets --no-fail-fast --features kgym/gcp,kgym/amqp,kgym/gce "$@"
cargo test --workspace --doc --features kgym/gcp,kgym/amqp,kgym/gce
