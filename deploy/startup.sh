#!/usr/bin/env bash
# The startup script of every kgym VM (deploy/gce.sh sets it as the
# `startup-script` metadata). GCE's guest agent runs it as root at every
# boot, so it is idempotent: the first boot clones and builds kgym, later
# boots fetch KGYM_REF again, rebuild (incrementally) and restart the
# service. Its output goes to the serial console and the journal
# (google-startup-scripts.service).
#
# Instance metadata it reads (deploy/gce.sh sets them):
#   kgym-role       scheduler, builder or reproducer
#   kgym-repo       git URL of kgym;  kgym-ref: branch, tag or commit
#   kgym-artifacts  gs://bucket;  kgym-token: the API token
#   kgym-port       (scheduler) the port it serves on, inside the VPC
#   kgym-server     (workers) the scheduler's URL;  kgym-slots: stages at once
set -euo pipefail

METADATA=http://metadata.google.internal/computeMetadata/v1/instance/attributes
SRC=/opt/kgym
RUST=/opt/rust

log() { echo "kgym startup: $*" >&2; }
fail() {
  log "$*"
  exit 1
}

# One attribute; a missing one is an error unless a default is given
# (curl -f: the metadata server answers 404 for an unset key).
meta() {
  local value
  if value=$(curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "$METADATA/$1" 2>/dev/null); then
    printf '%s' "$value"
  elif (($# > 1)); then
    printf '%s' "$2"
  else
    fail "instance metadata $1 is not set (deploy/gce.sh sets it)"
  fi
}

role=$(meta kgym-role)
case "$role" in
  scheduler) service=kscheduler ;;
  builder) service=kbuilder ;;
  reproducer) service=kreproducer ;;
  *) fail "kgym-role=${role@Q}: scheduler, builder or reproducer" ;;
esac
repo=$(meta kgym-repo)
ref=$(meta kgym-ref main)
artifacts=$(meta kgym-artifacts)
token=$(meta kgym-token)
# Every setting is read here, before anything is installed: a missing one
# fails the boot early, and $(...) inside the env file below could not.
if [[ $role == scheduler ]]; then
  port=$(meta kgym-port 8000)
else
  server=$(meta kgym-server)
  slots=$(meta kgym-slots 1)
  # Workers on RabbitMQ (deploy/gce.sh WORKER_TRANSPORT=amqp): the
  # scheduler VM's broker.
  broker=$(meta kgym-broker "")
fi
# gce:<type> machines (deploy/gce.sh GCE_MACHINES=1): reproducers only.
gce_project=""
if [[ $role == reproducer ]]; then
  gce_project=$(meta kgym-gce-project "")
  if [[ -n $gce_project ]]; then
    gce_zone=$(meta kgym-gce-zone)
    gce_bucket=$(meta kgym-gce-bucket)
  fi
fi
log "role $role ($service), kgym $repo at $ref"

# The guest agent may run this without HOME; git and rustup want one.
export HOME=${HOME:-/root}
host=$(hostname -s)

# git comes first: setup.sh lives in the repository. (curl ships with
# GCE's images: it read the metadata above.)
export DEBIAN_FRONTEND=noninteractive
if ! command -v git >/dev/null; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends git ca-certificates
fi

# The service's own user: it never runs as root. The kvm group opens
# /dev/kvm to the reproducer (the unit adds it as a supplementary group).
getent group kvm >/dev/null || groupadd --system kvm
if ! id kgym >/dev/null 2>&1; then
  # Home is the unit's StateDirectory, which systemd creates and owns.
  useradd --system --home-dir /var/lib/kgym --no-create-home --shell /usr/sbin/nologin kgym
fi
if [[ $role == reproducer ]]; then
  usermod -aG kvm kgym
  [[ -e /dev/kvm ]] || log "warning: no /dev/kvm (nested virtualization off?); QEMU falls back to TCG, far slower"
fi

# init + fetch rather than clone: the same steps work on the first boot
# and on every later one (no re-clone), and for a branch, tag or commit.
# setup.sh later puts its Go toolchain and busybox under $SRC too; they
# are untracked and survive the checkout.
if [[ ! -d $SRC/.git ]]; then
  git init -q "$SRC"
  git -C "$SRC" remote add origin "$repo"
fi
git -C "$SRC" remote set-url origin "$repo"
git -C "$SRC" fetch -q origin "$ref"
git -C "$SRC" checkout -q --force --detach FETCH_HEAD
log "kgym at $(git -C "$SRC" rev-parse HEAD)"

# A Rust toolchain for the whole machine (Debian 12's rustc is older than
# kgym's rust-version); setup.sh requires cargo on PATH.
export RUSTUP_HOME=$RUST/rustup CARGO_HOME=$RUST/cargo
export PATH=$CARGO_HOME/bin:$PATH
# Installed once and not updated at boot: a new toolchain would rebuild
# everything from scratch on every VM.
if ! command -v cargo >/dev/null; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --no-modify-path --profile minimal --default-toolchain stable
fi

"$SRC/scripts/setup.sh"
# Built by root into $SRC/target: the service user only reads it.
(cd "$SRC" && cargo build --release --features kgym/gcp,kgym/amqp,kgym/gce --examples)

# The scheduler's VM also runs RabbitMQ (Debian's package, under systemd
# here): ready stages wait in its durable queues, so they outlive the
# scheduler's process. Only the scheduler talks to it, over loopback, where
# RabbitMQ's default guest account is allowed.
if [[ $role == scheduler ]]; then
  if ! dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q "install ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server
  fi
  # Workers on RabbitMQ (KGYM_AMQP on kbuilder/kreproducer) hold a
  # stage's announcement unacked until its result is recorded; RabbitMQ
  # closes a channel holding one longer than consumer_timeout (30 min by
  # default), shorter than a big kernel build. 24 h here.
  conf=/etc/rabbitmq/rabbitmq.conf
  changed=0
  if ! grep -qs '^consumer_timeout' "$conf"; then
    echo "consumer_timeout = 86400000" >>"$conf"
    changed=1
  fi
  # Workers on other VMs connect (the firewall rule keeps 5672 inside the
  # VPC): every interface.
  if ! grep -qs '^listeners.tcp' "$conf"; then
    echo "listeners.tcp.default = 5672" >>"$conf"
    changed=1
  fi
  if ((changed)); then systemctl restart rabbitmq-server.service; fi
  systemctl enable --now rabbitmq-server.service
  # The workers' login (guest may log in from loopback only): user kgym,
  # the deployment's token as its password, set again at every boot.
  "$SRC/deploy/rabbitmq-user.sh" kgym "$token"
fi

# The settings, rewritten at every boot from the metadata (a changed token
# or bucket takes effect on reboot). Readable by the service only: it
# holds the token.
mkdir -p /etc/kgym
env_file=/etc/kgym/$service.env
{
  echo "KGYM_TOKEN=$token"
  echo "KGYM_ARTIFACTS=$artifacts"
  echo "RUST_LOG=info"
  if [[ $role == scheduler ]]; then
    # 0.0.0.0: workers connect from other VMs; the firewall rule keeps
    # the port inside the VPC, and the token is required beyond loopback.
    echo "KGYM_LISTEN=0.0.0.0:$port"
    echo "KGYM_AMQP=amqp://guest:guest@127.0.0.1:5672/%2f"
  else
    echo "KGYM_SERVER=$server"
    echo "KGYM_SLOTS=$slots"
    # One worker per VM: its host name names it at the scheduler.
    echo "KGYM_HOST=$host"
    if [[ -n $broker ]]; then
      # Stages come from RabbitMQ, and every other call goes through it.
      echo "KGYM_AMQP=amqp://kgym:$token@$broker:5672/%2f"
    fi
    if [[ -n $gce_project ]]; then
      echo "KGYM_GCE_PROJECT=$gce_project"
      echo "KGYM_GCE_ZONE=$gce_zone"
      echo "KGYM_GCE_BUCKET=$gce_bucket"
    fi
  fi
} >"$env_file.new"
chown root:kgym "$env_file.new"
chmod 0640 "$env_file.new"
mv "$env_file.new" "$env_file"

install -m 0644 "$SRC/deploy/systemd/$service.service" "/etc/systemd/system/$service.service"
systemctl daemon-reload
systemctl enable "$service.service"
# restart, not start: on a later boot the unit already runs the binary of
# the previous build (SIGTERM hands its stages back first).
systemctl restart "$service.service"
log "$service started"
