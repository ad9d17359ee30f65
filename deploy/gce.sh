#!/usr/bin/env bash
# Creates (or deletes) a kgym deployment on Google Cloud with gcloud:
#
#   PROJECT=my-project KGYM_REPO=https://github.com/me/kgym.git ./deploy/gce.sh      # up
#   PROJECT=my-project ./deploy/gce.sh down                                           # delete VMs + firewall
#   PROJECT=my-project DELETE_BUCKET=1 ./deploy/gce.sh down                           # ... and the bucket
#   DRY_RUN=1 PROJECT=p KGYM_REPO=u ./deploy/gce.sh                                   # print, run nothing
#
# What it makes: a GCS bucket for artifacts, a firewall rule opening the
# scheduler's port to the workers' network tag only, one scheduler VM
# ($PREFIX-main), $BUILDERS builder VMs ($PREFIX-builder-N) and
# $REPRODUCERS reproducer VMs ($PREFIX-repro-N, nested virtualization: QEMU
# needs KVM). Every VM boots deploy/startup.sh, which reads its role and
# settings from the metadata set here. See deploy/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/gce.sh [up|down|help]

Settings (environment):
  PROJECT                  Google Cloud project (required)
  ZONE                     zone of every VM (default us-central1-a)
  BUCKET                   artifact bucket name, without gs:// (default $PROJECT-kgym)
  PREFIX                   name prefix of VMs, tags, labels, rule (default kgym)
  BUILDERS                 builder VMs (default 1)
  REPRODUCERS              reproducer VMs (default 1)
  SCHEDULER_MACHINE_TYPE   default e2-standard-4
  BUILDER_MACHINE_TYPE     default c2-standard-30
  REPRODUCER_MACHINE_TYPE  default c2-standard-16 (nested virtualization needs Intel)
  DISK_SIZE                boot disk of every VM (default 200GB)
  IMAGE_FAMILY             default debian-12 (IMAGE_PROJECT default debian-cloud)
  NETWORK                  VPC network (default default)
  PORT                     the scheduler's port (default 8000)
  BUILDER_SLOTS            concurrent stages per builder (default 1)
  REPRODUCER_SLOTS         concurrent stages per reproducer (default 1)
  KGYM_REPO                git URL the VMs clone kgym from (required for up)
  KGYM_REF                 branch, tag or commit (default main)
  TOKEN                    the API token (default: openssl rand -hex 32)
  SERVICE_ACCOUNT          the VMs' service account (default: the project's
                           default compute account); when set it is also
                           granted roles/storage.objectAdmin on the bucket
  WORKER_TRANSPORT         amqp (default): workers take stages from the
                           scheduler VM's RabbitMQ (port 5672 inside the VPC,
                           user kgym, the token as its password); http: they
                           poll the scheduler's API
  GCE_MACHINES             1: reproducer VMs also run gce:<type> machines on
                           Compute Engine (images and instances in PROJECT
                           and ZONE, disks uploaded to BUCKET; adds the
                           compute-rw scope to reproducer VMs)
  DELETE_BUCKET            1: `down` deletes the bucket and its objects too
  DRY_RUN                  1: print the gcloud commands (`+ ...`), run nothing
EOF
}

die() {
  echo "gce.sh: $*" >&2
  exit 2
}

action=${1:-up}
case "$action" in
  up | down) ;;
  help | -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    die "unknown action ${action@Q} (up, down or help)"
    ;;
esac
(($# <= 1)) || die "one action at most; settings come from the environment (see help)"

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
STARTUP_SCRIPT="$DEPLOY_DIR/startup.sh"

PROJECT=${PROJECT:-}
[[ -n $PROJECT ]] || die "PROJECT is required (the Google Cloud project id)"
ZONE=${ZONE:-us-central1-a}
BUCKET=${BUCKET:-$PROJECT-kgym}
PREFIX=${PREFIX:-kgym}
BUILDERS=${BUILDERS:-1}
REPRODUCERS=${REPRODUCERS:-1}
SCHEDULER_MACHINE_TYPE=${SCHEDULER_MACHINE_TYPE:-e2-standard-4}
BUILDER_MACHINE_TYPE=${BUILDER_MACHINE_TYPE:-c2-standard-30}
REPRODUCER_MACHINE_TYPE=${REPRODUCER_MACHINE_TYPE:-c2-standard-16}
DISK_SIZE=${DISK_SIZE:-200GB}
IMAGE_FAMILY=${IMAGE_FAMILY:-debian-12}
IMAGE_PROJECT=${IMAGE_PROJECT:-debian-cloud}
NETWORK=${NETWORK:-default}
PORT=${PORT:-8000}
BUILDER_SLOTS=${BUILDER_SLOTS:-1}
REPRODUCER_SLOTS=${REPRODUCER_SLOTS:-1}
KGYM_REPO=${KGYM_REPO:-}
KGYM_REF=${KGYM_REF:-main}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-}
DELETE_BUCKET=${DELETE_BUCKET:-0}
GCE_MACHINES=${GCE_MACHINES:-0}
WORKER_TRANSPORT=${WORKER_TRANSPORT:-amqp}
DRY_RUN=${DRY_RUN:-0}

# Checked before anything runs, so a typo never leaves half a deployment.
is_count() { [[ $1 =~ ^[0-9]+$ ]] && (($1 <= 100)); }
is_count "$BUILDERS" || die "BUILDERS=${BUILDERS@Q} is not a number of VMs (0-100)"
is_count "$REPRODUCERS" || die "REPRODUCERS=${REPRODUCERS@Q} is not a number of VMs (0-100)"
[[ $BUILDER_SLOTS =~ ^[1-9][0-9]*$ ]] || die "BUILDER_SLOTS=${BUILDER_SLOTS@Q} is not a positive number"
[[ $REPRODUCER_SLOTS =~ ^[1-9][0-9]*$ ]] || die "REPRODUCER_SLOTS=${REPRODUCER_SLOTS@Q} is not a positive number"
[[ $PORT =~ ^[0-9]+$ ]] && ((PORT >= 1 && PORT <= 65535)) || die "PORT=${PORT@Q} is not a TCP port"
# The prefix names VMs, network tags and label values: the strictest of
# those rules (lowercase, digits, dashes; VM names stay within 63 chars).
[[ $PREFIX =~ ^[a-z][-a-z0-9]{0,40}$ ]] || die "PREFIX=${PREFIX@Q}: lowercase letters, digits and dashes, starting with a letter"
[[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "ZONE=${ZONE@Q} is not a zone like us-central1-a"
[[ $BUCKET =~ ^[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9]$ ]] || die "BUCKET=${BUCKET@Q} is not a bucket name (without gs://)"
[[ $DISK_SIZE =~ ^[0-9]+(GB|TB)?$ ]] || die "DISK_SIZE=${DISK_SIZE@Q} is not a size like 200GB"
[[ $DELETE_BUCKET =~ ^[01]$ ]] || die "DELETE_BUCKET=${DELETE_BUCKET@Q}: 1 or 0"
[[ $GCE_MACHINES =~ ^[01]$ ]] || die "GCE_MACHINES=${GCE_MACHINES@Q}: 1 or 0"
[[ $WORKER_TRANSPORT =~ ^(amqp|http)$ ]] || die "WORKER_TRANSPORT=${WORKER_TRANSPORT@Q}: amqp or http"
[[ $DRY_RUN =~ ^[01]$ ]] || die "DRY_RUN=${DRY_RUN@Q}: 1 or 0"

REGION=${ZONE%-*}
SCHEDULER=$PREFIX-main
RULE=$PREFIX-allow-scheduler
SCHEDULER_TAG=$PREFIX-scheduler
WORKER_TAG=$PREFIX-worker
# Workers reach the scheduler by its instance name: GCE's internal DNS
# resolves it inside the VPC (the VMs' resolv.conf searches the zone).
SERVER_URL=http://$SCHEDULER:$PORT

builder_names() { for ((i = 0; i < BUILDERS; i++)); do echo "$PREFIX-builder-$i"; done; }
reproducer_names() { for ((i = 0; i < REPRODUCERS; i++)); do echo "$PREFIX-repro-$i"; done; }

# Words that need no quoting are printed as they are, the rest in single
# quotes: the printed line can be pasted back into a shell. (printf %q
# would escape every comma of --metadata=a=1,b=2.)
quote() {
  if [[ $1 =~ ^[-A-Za-z0-9_./:=,@+%]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

print_command() {
  local out="+" word
  for word in "$@"; do
    out+=" $(quote "$word")"
  done
  echo "$out"
}

# Runs one mutating gcloud command, or prints it with DRY_RUN=1. For real
# it is logged on stderr with the token hidden (the log may be shared).
run() {
  if ((DRY_RUN)); then
    print_command "$@"
  else
    local line
    line=$(print_command "$@")
    [[ -z $TOKEN ]] || line=${line//$TOKEN/***}
    echo "$line" >&2
    "$@"
  fi
}

# Read-only existence checks make `up` resumable and `down` tolerant of
# what is already gone. DRY_RUN queries nothing: `up` assumes nothing
# exists yet, `down` assumes everything the settings describe does.
exists() {
  ((DRY_RUN)) && { [[ $action == down ]]; return; }
  "$@" >/dev/null 2>&1
}

instance_exists() { exists gcloud compute instances describe "$1" --project="$PROJECT" --zone="$ZONE" --format='value(name)'; }

TOKEN=${TOKEN:-}

up() {
  [[ -n $KGYM_REPO ]] || die "KGYM_REPO is required (the git URL every VM clones kgym from)"
  [[ -f $STARTUP_SCRIPT ]] || die "$STARTUP_SCRIPT is missing"
  if [[ -z $TOKEN ]]; then
    command -v openssl >/dev/null || die "TOKEN is unset and openssl is missing to generate one"
    TOKEN=$(openssl rand -hex 32)
  fi
  # gcloud's --metadata splits at commas; settings that hold one would be
  # cut silently.
  local name value
  for name in KGYM_REPO KGYM_REF TOKEN; do
    value=${!name}
    [[ $value != *,* && $value != *[[:space:]]* ]] || die "$name must not contain a comma or a space"
  done
  # The token is also the workers' RabbitMQ password, inside an amqp:// URL.
  if [[ $WORKER_TRANSPORT == amqp && ! $TOKEN =~ ^[A-Za-z0-9._~-]+$ ]]; then
    die "TOKEN: letters, digits and . _ ~ - only with WORKER_TRANSPORT=amqp (it is the broker password in a URL)"
  fi

  if exists gcloud storage buckets describe "gs://$BUCKET" --project="$PROJECT"; then
    echo "gce.sh: bucket gs://$BUCKET exists; kept" >&2
  else
    run gcloud storage buckets create "gs://$BUCKET" --project="$PROJECT" --location="$REGION" \
      --uniform-bucket-level-access
  fi
  if [[ -n $SERVICE_ACCOUNT ]]; then
    run gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --project="$PROJECT" \
      --member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/storage.objectAdmin
  fi

  # Source tags match only traffic from VMs inside the VPC network, and
  # only those tagged as workers: the scheduler's port (and RabbitMQ's, for
  # workers on AMQP) is never public.
  local ports="tcp:$PORT" worker_settings=""
  if [[ $WORKER_TRANSPORT == amqp ]]; then
    ports+=",tcp:5672"
    # startup.sh makes the broker URL: user kgym, the token as password.
    worker_settings=",kgym-broker=$SCHEDULER"
  fi
  if exists gcloud compute firewall-rules describe "$RULE" --project="$PROJECT"; then
    echo "gce.sh: firewall rule $RULE exists; kept" >&2
  else
    run gcloud compute firewall-rules create "$RULE" --project="$PROJECT" --network="$NETWORK" \
      --direction=INGRESS --action=allow --rules="$ports" \
      --source-tags="$WORKER_TAG" --target-tags="$SCHEDULER_TAG"
  fi

  local common=(--project="$PROJECT" --zone="$ZONE" --image-family="$IMAGE_FAMILY"
    --image-project="$IMAGE_PROJECT" --boot-disk-size="$DISK_SIZE" --network="$NETWORK"
    --metadata-from-file="startup-script=$STARTUP_SCRIPT")
  # storage-rw: artifacts go to the bucket with the VM's own credentials.
  if [[ -n $SERVICE_ACCOUNT ]]; then
    common+=(--service-account="$SERVICE_ACCOUNT")
  fi
  local scopes=storage-rw,logging-write,monitoring-write
  local settings="kgym-repo=$KGYM_REPO,kgym-ref=$KGYM_REF,kgym-artifacts=gs://$BUCKET,kgym-token=$TOKEN"

  create_instance "$SCHEDULER" "${common[@]}" --scopes="$scopes" --machine-type="$SCHEDULER_MACHINE_TYPE" \
    --tags="$SCHEDULER_TAG" --labels="kgym-deployment=$PREFIX,kgym-role=scheduler" \
    --metadata="kgym-role=scheduler,$settings,kgym-port=$PORT"
  for name in $(builder_names); do
    create_instance "$name" "${common[@]}" --scopes="$scopes" --machine-type="$BUILDER_MACHINE_TYPE" \
      --tags="$WORKER_TAG" --labels="kgym-deployment=$PREFIX,kgym-role=builder" \
      --metadata="kgym-role=builder,$settings,kgym-server=$SERVER_URL,kgym-slots=$BUILDER_SLOTS$worker_settings"
  done
  # QEMU under TCG is ~10x slower than KVM: reproducers need nested
  # virtualization (Intel machine types).
  # With GCE_MACHINES=1 a reproducer also creates images and instances
  # (gce:<type> machines): compute-rw, and where to create them.
  local repro_scopes=$scopes repro_settings=""
  if ((GCE_MACHINES)); then
    repro_scopes=$scopes,compute-rw
    repro_settings=",kgym-gce-project=$PROJECT,kgym-gce-zone=$ZONE,kgym-gce-bucket=$BUCKET"
  fi
  for name in $(reproducer_names); do
    create_instance "$name" "${common[@]}" --scopes="$repro_scopes" --machine-type="$REPRODUCER_MACHINE_TYPE" \
      --enable-nested-virtualization \
      --tags="$WORKER_TAG" --labels="kgym-deployment=$PREFIX,kgym-role=reproducer" \
      --metadata="kgym-role=reproducer,$settings,kgym-server=$SERVER_URL,kgym-slots=$REPRODUCER_SLOTS$worker_settings$repro_settings"
  done

  if ((!DRY_RUN)); then
    cat >&2 <<EOF
gce.sh: created. The VMs now install packages and build kgym (startup
script, ~20-30 minutes); follow one with
  gcloud compute instances get-serial-port-output $SCHEDULER --project=$PROJECT --zone=$ZONE
The scheduler is $SERVER_URL inside the VPC. Its token is in its metadata:
  gcloud compute instances describe $SCHEDULER --project=$PROJECT --zone=$ZONE \\
    --format='value(metadata.items.kgym-token)'
EOF
  fi
}

create_instance() {
  local name=$1
  shift
  if instance_exists "$name"; then
    echo "gce.sh: instance $name exists; kept (delete it to recreate)" >&2
  else
    run gcloud compute instances create "$name" "$@"
  fi
}

down() {
  local instances=() name
  for name in "$SCHEDULER" $(builder_names) $(reproducer_names); do
    instance_exists "$name" && instances+=("$name")
  done
  if ((!DRY_RUN)); then
    # VMs this deployment created beyond today's BUILDERS/REPRODUCERS
    # (the counts were larger at `up`) carry its label: delete them too.
    local labelled
    labelled=$(gcloud compute instances list --project="$PROJECT" --zones="$ZONE" \
      --filter="labels.kgym-deployment=$PREFIX" --format='value(name)')
    for name in $labelled; do
      [[ " ${instances[*]} " == *" $name "* ]] || instances+=("$name")
    done
  fi
  if ((${#instances[@]})); then
    # One call: the VMs stop in parallel, each getting its shutdown grace
    # (the services hand their running stages back on SIGTERM).
    run gcloud compute instances delete "${instances[@]}" --project="$PROJECT" --zone="$ZONE" --quiet
  else
    echo "gce.sh: no $PREFIX instances in $ZONE" >&2
  fi
  if exists gcloud compute firewall-rules describe "$RULE" --project="$PROJECT"; then
    run gcloud compute firewall-rules delete "$RULE" --project="$PROJECT" --quiet
  fi
  if ((DELETE_BUCKET)); then
    if exists gcloud storage buckets describe "gs://$BUCKET" --project="$PROJECT"; then
      run gcloud storage rm --recursive "gs://$BUCKET" --project="$PROJECT"
    fi
  else
    echo "gce.sh: bucket gs://$BUCKET kept (DELETE_BUCKET=1 deletes it with its artifacts)" >&2
  fi
}

if ((!DRY_RUN)); then
  command -v gcloud >/dev/null || die "gcloud is not installed (DRY_RUN=1 only prints the commands)"
fi
"$action"
