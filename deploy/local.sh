#!/usr/bin/env bash
# kgym's three stock services as separate processes on this machine: the
# same topology as a GCE deployment (scheduler + build worker + reproduce
# worker, over HTTP, sharing an artifact directory), for trying it out.
#
#   cargo build --workspace --examples --features kgym/gcp
#   ./deploy/local.sh            # ctrl-c stops it
#
# Settings (environment):
#   PORT             the scheduler's port on 127.0.0.1 (default 8000)
#   KGYM_BIN         where the service binaries are (default target/debug/examples
#                    of this checkout)
#   KGYM_DEPLOY_DIR  logs, data and artifacts (default a new temporary directory)
#   KGYM_ARTIFACTS   the shared artifact store (default $KGYM_DEPLOY_DIR/artifacts)
#   KGYM_HOST        base of the workers' names: <base>-kbuilder and
#                    <base>-kreproducer (default the host name)
#   KGYM_TOKEN       the API token, seen by all three (optional on loopback)
#   STOP_TIMEOUT     seconds each service gets to stop before SIGKILL (default 60)
#
# SIGINT/SIGTERM stops the workers first (they hand running stages back to
# the scheduler), then the scheduler, and exits once all three are gone
# (status 0 when each stopped cleanly). Started with `&` from another
# script, bash makes it ignore SIGINT for good: send SIGTERM then.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BIN=${KGYM_BIN:-$ROOT/target/debug/examples}
PORT=${PORT:-8000}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
HOST_BASE=${KGYM_HOST:-$(hostname -s 2>/dev/null || echo local)}

die() {
  echo "local.sh: $*" >&2
  exit 2
}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT >= 1 && PORT <= 65535)) || die "PORT=${PORT@Q} is not a TCP port"
[[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || die "STOP_TIMEOUT=${STOP_TIMEOUT@Q} is not a number of seconds"
for name in kscheduler kbuilder kreproducer; do
  [[ -x $BIN/$name ]] || die "$BIN/$name is missing (cargo build --workspace --examples --features kgym/gcp)"
done
command -v curl >/dev/null || die "curl is needed to check the scheduler's health"

if [[ -n ${KGYM_DEPLOY_DIR:-} ]]; then
  DIR=$KGYM_DEPLOY_DIR
  mkdir -p "$DIR"
else
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/kgym-local.XXXXXX")
fi
DIR="$(cd "$DIR" && pwd -P)"
ARTIFACTS=${KGYM_ARTIFACTS:-$DIR/artifacts}
URL=http://127.0.0.1:$PORT

declare -A pids=()

# The rest of the environment (KGYM_TOKEN, KGYM_SLOTS, KGYM_LABELS, ...)
# passes through to every service.
# Each service in its own session: a ctrl-c in the terminal reaches only
# this script, which then stops them in order (workers before the
# scheduler they hand stages back to). A background child of a script is
# not a process group leader, so setsid makes the session in place
# without forking and $! is the service's own pid (and its group id,
# which the SIGKILL fallback uses to take its children too).
start() {
  local name=$1
  shift
  mkdir -p "$DIR/$name"
  env "$@" KGYM_DATA="$DIR/$name" KGYM_ARTIFACTS="$ARTIFACTS" RUST_LOG="${RUST_LOG:-info}" \
    setsid "$BIN/$name" </dev/null >"$DIR/$name.log" 2>&1 &
  local pid=$! comm i
  pids[$name]=$pid
  # Until env and setsid have exec'd the service, a signal would hit them
  # instead (and the pid would not yet lead its process group).
  for ((i = 0; i < 200; i++)); do
    comm=$(ps -o comm= -p "$pid" 2>/dev/null) || return 0 # exited: reported below
    [[ $comm == "$name" ]] && return 0
    sleep 0.05
  done
  echo "local.sh: $name (pid $pid) did not start within 10 s" >&2
  exit 1
}

# Running, as opposed to gone or a zombie waiting for `wait`.
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

# SIGTERM, then up to STOP_TIMEOUT seconds for it to go; SIGKILL to its
# whole process group after that. Returns its exit status.
stop_one() {
  local name=$1 pid=${pids[$1]:-}
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while alive "$pid" && ((waited < STOP_TIMEOUT * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if alive "$pid"; then
    echo "local.sh: $name (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  local status=0
  wait "$pid" 2>/dev/null || status=$?
  unset "pids[$name]"
  # 143 (killed by the SIGTERM above): a service signalled before it set
  # its handler up, in its first moments, held no stage to hand back.
  ((status == 143)) && status=0
  return "$status"
}

stopping=0
stop_all() {
  ((stopping)) && return
  stopping=1
  # A second ctrl-c must not cut the orderly stop short.
  trap '' INT TERM
  local failed=0 name
  for name in kbuilder kreproducer kscheduler; do
    if [[ -n ${pids[$name]:-} ]]; then
      echo "local.sh: stopping $name (pid ${pids[$name]})" >&2
      stop_one "$name" || {
        echo "local.sh: $name exited with status $? (log: $DIR/$name.log)" >&2
        failed=1
      }
    fi
  done
  return "$failed"
}

on_signal() {
  local status=0
  stop_all || status=1
  echo "local.sh: stopped" >&2
  exit "$status"
}
trap on_signal INT TERM
# Also on an error of this script (a scheduler that never answers, ...).
trap 'stop_all || true' EXIT

start kscheduler KGYM_LISTEN="127.0.0.1:$PORT"
# Workers started before the scheduler listens would fail to register.
for ((i = 0; ; i++)); do
  # --noproxy: a proxy from the environment must not answer for loopback.
  if curl -fsS --noproxy '*' --max-time 2 "$URL/api/v1/health" >/dev/null 2>&1; then
    break
  fi
  if ! alive "${pids[kscheduler]}"; then
    echo "local.sh: kscheduler exited; its log ($DIR/kscheduler.log):" >&2
    tail -n 20 "$DIR/kscheduler.log" >&2 || true
    exit 1
  fi
  ((i < 600)) || {
    echo "local.sh: kscheduler did not answer $URL/api/v1/health within 60 s" >&2
    exit 1
  }
  sleep 0.1
done
start kbuilder KGYM_SERVER="$URL" KGYM_HOST="$HOST_BASE-kbuilder"
start kreproducer KGYM_SERVER="$URL" KGYM_HOST="$HOST_BASE-kreproducer"

cat <<EOF
kgym is up: $URL
kscheduler pid=${pids[kscheduler]} log=$DIR/kscheduler.log
kbuilder pid=${pids[kbuilder]} log=$DIR/kbuilder.log
kreproducer pid=${pids[kreproducer]} log=$DIR/kreproducer.log
artifacts: $ARTIFACTS
stop: ctrl-c, or kill -TERM $$
EOF

# `wait -n` returns when a service exits, and also (early) when a trapped
# signal arrives, which then runs on_signal. A service that exits on its
# own ends the whole set: a half deployment would only mislead.
while true; do
  status=0
  wait -n "${pids[@]}" || status=$?
  for name in "${!pids[@]}"; do
    if ! alive "${pids[$name]}"; then
      echo "local.sh: $name exited by itself (status $status; log: $DIR/$name.log); stopping the others" >&2
      wait "${pids[$name]}" 2>/dev/null || true
      unset "pids[$name]"
      stop_all || true
      exit 1
    fi
  done
done
