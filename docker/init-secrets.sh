#!/usr/bin/env sh
# Creates docker/.env and docker/prometheus/metrics-token with fresh random tokens (once).
set -eu
cd "$(dirname "$0")"
if [ -f .env ]; then
  echo ".env exists; keeping it"
  exit 0
fi
rand() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
metrics=$(rand)
umask 077
{
  echo "COMPOSE_PROJECT_NAME=learnd"
  echo "LEARND_SERVING_TOKEN=$(rand)"
  echo "LEARND_METRICS_TOKEN=$metrics"
  echo "GRAFANA_ADMIN_PASSWORD=$(rand)"
} > .env
printf '%s' "$metrics" > prometheus/metrics-token
chmod 644 prometheus/metrics-token  # read by the prometheus container's user
echo "wrote docker/.env and docker/prometheus/metrics-token"
