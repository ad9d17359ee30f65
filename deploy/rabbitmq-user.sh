#!/usr/bin/env bash
# Creates the RabbitMQ user the workers log in as, or sets its password
# when it exists, and gives it every permission on the vhost "/" (the
# workers declare, consume and publish the kgym queues). Run by
# startup.sh on the scheduler's VM, as root, with the deployment's token as
# the password; safe to run again (every boot does).
#
#   deploy/rabbitmq-user.sh USER PASSWORD
#
# RABBITMQCTL overrides the command (default `rabbitmqctl`), e.g.
# `rabbitmqctl -n node@host` for a broker that is not the default node.
set -euo pipefail

die() {
  echo "rabbitmq-user.sh: $*" >&2
  exit 2
}

(($# == 2)) || die "usage: rabbitmq-user.sh USER PASSWORD"
user=$1
password=$2
[[ $user =~ ^[A-Za-z0-9_.-]+$ ]] || die "user ${user@Q}: letters, digits, _ . - only"
[[ -n $password ]] || die "an empty password"
[[ $user != guest ]] || die "guest may log in from loopback only; pick another user"
read -ra ctl <<<"${RABBITMQCTL:-rabbitmqctl}"

if "${ctl[@]}" list_users --quiet --no-table-headers | awk '{print $1}' | grep -qxF -- "$user"; then
  "${ctl[@]}" change_password "$user" "$password" >/dev/null
else
  "${ctl[@]}" add_user "$user" "$password" >/dev/null
fi
"${ctl[@]}" set_permissions -p / "$user" '.*' '.*' '.*' >/dev/null
echo "rabbitmq-user.sh: $user may use vhost / with its new password"
