#!/usr/bin/env bash
# Provisions a Redpanda cluster for the pipeline with rpk: its topics, a SCRAM user for the
# job, and that user's ACLs. Safe to re-run: existing topics and an existing user are left as
# they are (their settings are not changed), and re-creating an existing ACL is a no-op.
#
#   export RPK_BROKERS=redpanda-0.example:9092 RPK_ADMIN_HOSTS=redpanda-0.example:9644
#   export RPK_USER=admin RPK_PASS=... RPK_SASL_MECHANISM=SCRAM-SHA-256   # a superuser
#   export JOB_PASSWORD=...     # the job user's password; also PIPELINE_KAFKA_SASL_PASSWORD
#                               # in the gateway-pipeline-secrets Kubernetes Secret
#   deploy/redpanda/provision.sh
#
# rpk takes its connection from an rpk profile (`rpk profile create`, or RPK_PROFILE) or from
# RPK_* environment variables: RPK_BROKERS (Kafka API), RPK_ADMIN_HOSTS (Admin API, used to
# create the SCRAM user), RPK_USER / RPK_PASS / RPK_SASL_MECHANISM, RPK_TLS_ENABLED, ...
# (`rpk -X help`). The principal running this needs superuser rights.
#
# Settings (environment); the defaults below are the topic catalog's production values
# (metering/topics.py, which says why; tests/unit/test_k8s_and_provisioning.py checks them):
#   Topics; the names must match the job's --raw-topic, --enriched-topic, ... (defaults equal):
#     RAW_TOPIC, ENRICHED_TOPIC, USAGE_TOPIC, ALERTS_TOPIC, DLQ_TOPIC, RECON_TOPIC,
#     PERIOD_USAGE_TOPIC, QUOTA_SIGNALS_TOPIC, BALANCE_SIGNALS_TOPIC; and the
#     responder's (responder/, its --actions-topic): ACTIONS_TOPIC; and billing's inputs
#     (python -m tools.billing): PLANS_TOPIC, SUBSCRIPTIONS_TOPIC, GRANTS_TOPIC (compacted, never
#     deleted by time: retention.ms -1)
#   PARTITIONS             raw, enriched, usage, period usage (the job's parallelism should
#                          not exceed it)
#   SMALL_PARTITIONS       alerts, dlq, reconciliation, actions, quota and balance signals
#   REPLICAS=3             replication factor (Redpanda requires an odd number; 1 on a dev node)
#   MIN_INSYNC_REPLICAS=2  set as min.insync.replicas on every topic; empty to leave it out.
#                          Redpanda acknowledges acks=all writes once a Raft majority has them
#                          and does not use this setting; Apache Kafka brokers do.
#   Retention (ms): RAW_RETENTION_MS, ENRICHED_RETENTION_MS, USAGE_RETENTION_MS,
#     ALERTS_RETENTION_MS, DLQ_RETENTION_MS, RECON_RETENTION_MS, ACTIONS_RETENTION_MS,
#     PERIOD_USAGE_RETENTION_MS, SIGNALS_RETENTION_MS (quota and balance signals).
#     cleanup.policy: compact,delete on the upsert topics (reconciliation, period usage),
#     delete on the others.
#   Job principal:
#     JOB_PRINCIPAL=gateway-pipeline     SCRAM user name (ACL principal User:<name>)
#     JOB_PASSWORD                       its password; required unless CREATE_USER=0. Read from
#                                        the environment only and never printed.
#     SASL_MECHANISM=SCRAM-SHA-256       or SCRAM-SHA-512; the job's Kafka settings must match
#     CREATE_USER=1                      0: skip the user (e.g. it is managed elsewhere)
#     GROUP_ID=gateway-pipeline          the job's --group-id
#     TRANSACTIONAL_ID_PREFIX=gateway-pipeline   the job's --transactional-id-prefix
#
# ACLs for User:<JOB_PRINCIPAL>:
#   raw topic: read, describe        consumer group: read, describe (offset commits and fetches)
#   billing inputs (plans, subscriptions, grants): read, describe (each billing subtask reads
#     them whole, assigned, without a group)
#   the output topics: write, describe, and read (the Kafka sink inspects its own output
#     topics' producers and transactions when it recovers and aborts leftovers)
#   transactional ids with the prefix TRANSACTIONAL_ID_PREFIX (prefixed pattern): write, describe
#     (each exactly-once sink uses <prefix>-<topic role>-..., e.g. <prefix>-enriched-...)
#   cluster: idempotent_write (the idempotent, non-transactional alerts producer)
#
# Caveat: rpk takes the new user's password as a command-line argument (`-p`), so it is visible
# in this host's process list while that one rpk call runs. Run this from a machine or a
# one-off container that nobody else shares.
set -euo pipefail

RAW_TOPIC="${RAW_TOPIC:-gateway.raw}"
ENRICHED_TOPIC="${ENRICHED_TOPIC:-gateway.enriched}"
USAGE_TOPIC="${USAGE_TOPIC:-gateway.usage}"
ALERTS_TOPIC="${ALERTS_TOPIC:-gateway.alerts}"
DLQ_TOPIC="${DLQ_TOPIC:-gateway.dlq}"
RECON_TOPIC="${RECON_TOPIC:-gateway.reconciliation}"
ACTIONS_TOPIC="${ACTIONS_TOPIC:-gateway.actions}"
PLANS_TOPIC="${PLANS_TOPIC:-gateway.billing.plans}"
SUBSCRIPTIONS_TOPIC="${SUBSCRIPTIONS_TOPIC:-gateway.billing.subscriptions}"
GRANTS_TOPIC="${GRANTS_TOPIC:-gateway.billing.grants}"
PERIOD_USAGE_TOPIC="${PERIOD_USAGE_TOPIC:-gateway.billing.period-usage}"
QUOTA_SIGNALS_TOPIC="${QUOTA_SIGNALS_TOPIC:-gateway.billing.quota-signals}"
BALANCE_SIGNALS_TOPIC="${BALANCE_SIGNALS_TOPIC:-gateway.billing.balance-signals}"

PARTITIONS="${PARTITIONS:-6}"
SMALL_PARTITIONS="${SMALL_PARTITIONS:-3}"
REPLICAS="${REPLICAS:-3}"
MIN_INSYNC_REPLICAS="${MIN_INSYNC_REPLICAS-2}"

DAY_MS=86400000
RAW_RETENTION_MS="${RAW_RETENTION_MS:-$((7 * DAY_MS))}"
ENRICHED_RETENTION_MS="${ENRICHED_RETENTION_MS:-$((7 * DAY_MS))}"
USAGE_RETENTION_MS="${USAGE_RETENTION_MS:-$((400 * DAY_MS))}"
ALERTS_RETENTION_MS="${ALERTS_RETENTION_MS:-$((30 * DAY_MS))}"
DLQ_RETENTION_MS="${DLQ_RETENTION_MS:-$((30 * DAY_MS))}"
RECON_RETENTION_MS="${RECON_RETENTION_MS:-$((400 * DAY_MS))}"
ACTIONS_RETENTION_MS="${ACTIONS_RETENTION_MS:-$((90 * DAY_MS))}"
PERIOD_USAGE_RETENTION_MS="${PERIOD_USAGE_RETENTION_MS:-$((400 * DAY_MS))}"
SIGNALS_RETENTION_MS="${SIGNALS_RETENTION_MS:-$((90 * DAY_MS))}"

JOB_PRINCIPAL="${JOB_PRINCIPAL:-gateway-pipeline}"
SASL_MECHANISM="${SASL_MECHANISM:-SCRAM-SHA-256}"
CREATE_USER="${CREATE_USER:-1}"
GROUP_ID="${GROUP_ID:-gateway-pipeline}"
TRANSACTIONAL_ID_PREFIX="${TRANSACTIONAL_ID_PREFIX:-gateway-pipeline}"

PRINCIPAL="User:${JOB_PRINCIPAL}"
MIN_PASSWORD_CHARS=16

die() {
  echo "provision: $*" >&2
  exit 1
}

is_count() {
  [[ "$1" =~ ^[1-9][0-9]*$ ]]
}

check_settings() {
  local name
  for name in PARTITIONS SMALL_PARTITIONS REPLICAS RAW_RETENTION_MS ENRICHED_RETENTION_MS \
    USAGE_RETENTION_MS ALERTS_RETENTION_MS DLQ_RETENTION_MS RECON_RETENTION_MS \
    PERIOD_USAGE_RETENTION_MS SIGNALS_RETENTION_MS; do
    is_count "${!name}" || die "$name must be a positive integer, not '${!name}'"
  done
  if [[ -n "$MIN_INSYNC_REPLICAS" ]]; then
    is_count "$MIN_INSYNC_REPLICAS" || die "MIN_INSYNC_REPLICAS must be a positive integer or empty"
    ((MIN_INSYNC_REPLICAS <= REPLICAS)) || die "MIN_INSYNC_REPLICAS exceeds REPLICAS"
  fi
  case "$SASL_MECHANISM" in
    SCRAM-SHA-256 | SCRAM-SHA-512) ;;
    *) die "SASL_MECHANISM must be SCRAM-SHA-256 or SCRAM-SHA-512" ;;
  esac
  [[ -n "$JOB_PRINCIPAL" && -n "$GROUP_ID" && -n "$TRANSACTIONAL_ID_PREFIX" ]] ||
    die "JOB_PRINCIPAL, GROUP_ID and TRANSACTIONAL_ID_PREFIX must not be empty"
  local topics
  topics="$(printf '%s\n' "$RAW_TOPIC" "$ENRICHED_TOPIC" "$USAGE_TOPIC" "$ALERTS_TOPIC" "$DLQ_TOPIC" \
    "$RECON_TOPIC" "$PERIOD_USAGE_TOPIC" "$QUOTA_SIGNALS_TOPIC" "$BALANCE_SIGNALS_TOPIC")"
  [[ "$(sort -u <<<"$topics" | wc -l)" -eq "$(wc -l <<<"$topics")" ]] ||
    die "the topic names must be distinct"
  if [[ "$CREATE_USER" == 1 ]]; then
    # Only the rule is reported, never the value.
    local password="${JOB_PASSWORD:-}"
    ((${#password} >= MIN_PASSWORD_CHARS)) ||
      die "JOB_PASSWORD must be set, at least $MIN_PASSWORD_CHARS characters" \
        "(e.g. openssl rand -base64 32), or CREATE_USER=0"
  fi
}

# create_topic NAME PARTITIONS RETENTION_MS [CLEANUP_POLICY]: creates the topic unless it exists.
create_topic() {
  local topic="$1" partitions="$2" retention_ms="$3" policy="${4:-delete}" out
  local args=(topic create "$topic" -p "$partitions" -r "$REPLICAS"
    -c "cleanup.policy=$policy" -c "retention.ms=$retention_ms")
  if [[ -n "$MIN_INSYNC_REPLICAS" ]]; then
    args+=(-c "min.insync.replicas=$MIN_INSYNC_REPLICAS")
  fi
  if out="$(rpk "${args[@]}" 2>&1)"; then
    echo "topic $topic created: $partitions partitions, $REPLICAS replicas," \
      "retention.ms=$retention_ms, cleanup.policy=$policy"
  elif grep -q TOPIC_ALREADY_EXISTS <<<"$out"; then
    echo "topic $topic exists; left unchanged (check it with: rpk topic describe $topic)"
  else
    echo "$out" >&2
    die "could not create topic $topic"
  fi
}

user_exists() {
  local users
  users="$(rpk security user list)" || die "could not list SASL users (is RPK_ADMIN_HOSTS set?)"
  # One user name per line under a USERNAME header.
  awk -v user="$JOB_PRINCIPAL" '$1 == user { found = 1 } END { exit !found }' <<<"$users"
}

create_user() {
  if [[ "$CREATE_USER" != 1 ]]; then
    echo "user: skipped (CREATE_USER=$CREATE_USER)"
    return
  fi
  if user_exists; then
    echo "user $JOB_PRINCIPAL exists; password left unchanged" \
      "(rotate it with: rpk security user update $JOB_PRINCIPAL --new-password ...)"
    return
  fi
  # The output of rpk is discarded: it never contains a password we chose, but keep it that way.
  rpk security user create "$JOB_PRINCIPAL" -p "$JOB_PASSWORD" \
    --mechanism "$SASL_MECHANISM" >/dev/null ||
    die "could not create user $JOB_PRINCIPAL"
  echo "user $JOB_PRINCIPAL created ($SASL_MECHANISM)"
}

# acl DESCRIPTION RPK-ACL-CREATE-ARGS...: creates the ACLs; rpk exits 0 even when some of them
# fail, reporting each failure in an extra ERROR column, so the table is checked too.
acl() {
  local what="$1" out
  shift
  out="$(rpk security acl create --allow-principal "$PRINCIPAL" "$@" 2>&1)" || {
    echo "$out" >&2
    die "could not create ACLs: $what"
  }
  # Columns: principal host resource-type resource-name pattern operation permission [error].
  if awk 'NR > 1 && NF > 7 { failed = 1 } END { exit !failed }' <<<"$out"; then
    echo "$out" >&2
    die "could not create ACLs: $what"
  fi
  echo "acl $PRINCIPAL: $what"
}

main() {
  check_settings
  command -v rpk >/dev/null || die "rpk not found on PATH"

  create_topic "$RAW_TOPIC" "$PARTITIONS" "$RAW_RETENTION_MS"
  create_topic "$ENRICHED_TOPIC" "$PARTITIONS" "$ENRICHED_RETENTION_MS"
  create_topic "$USAGE_TOPIC" "$PARTITIONS" "$USAGE_RETENTION_MS"
  create_topic "$ALERTS_TOPIC" "$SMALL_PARTITIONS" "$ALERTS_RETENTION_MS"
  create_topic "$DLQ_TOPIC" "$SMALL_PARTITIONS" "$DLQ_RETENTION_MS"
  create_topic "$RECON_TOPIC" "$SMALL_PARTITIONS" "$RECON_RETENTION_MS" compact,delete
  create_topic "$PERIOD_USAGE_TOPIC" "$PARTITIONS" "$PERIOD_USAGE_RETENTION_MS" compact,delete
  create_topic "$QUOTA_SIGNALS_TOPIC" "$SMALL_PARTITIONS" "$SIGNALS_RETENTION_MS"
  create_topic "$BALANCE_SIGNALS_TOPIC" "$SMALL_PARTITIONS" "$SIGNALS_RETENTION_MS"
  create_topic "$ACTIONS_TOPIC" "$SMALL_PARTITIONS" "$ACTIONS_RETENTION_MS"
  # One partition: a handful of plans, read whole by every pricer.
  create_topic "$PLANS_TOPIC" 1 -1 compact,delete
  create_topic "$SUBSCRIPTIONS_TOPIC" "$SMALL_PARTITIONS" -1 compact,delete
  create_topic "$GRANTS_TOPIC" "$SMALL_PARTITIONS" -1 compact,delete

  create_user

  acl "read, describe on topic $RAW_TOPIC" \
    --operation read,describe --topic "$RAW_TOPIC"
  acl "read, describe on group $GROUP_ID" \
    --operation read,describe --group "$GROUP_ID"
  acl "read, describe on the billing inputs" \
    --operation read,describe --topic "$PLANS_TOPIC,$SUBSCRIPTIONS_TOPIC,$GRANTS_TOPIC"
  acl "write, describe, read on the output topics" \
    --operation write,describe,read \
    --topic "$ENRICHED_TOPIC,$USAGE_TOPIC,$DLQ_TOPIC,$ALERTS_TOPIC,$RECON_TOPIC,$PERIOD_USAGE_TOPIC,$QUOTA_SIGNALS_TOPIC,$BALANCE_SIGNALS_TOPIC"
  acl "write, describe on transactional ids prefixed $TRANSACTIONAL_ID_PREFIX" \
    --operation write,describe --transactional-id "$TRANSACTIONAL_ID_PREFIX" \
    --resource-pattern-type prefixed
  acl "idempotent_write on the cluster" \
    --operation idempotent_write --cluster

  echo "provision: done"
}

main
