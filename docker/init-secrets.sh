#!/usr/bin/env sh
# Creates docker/.env with fresh random tokens (once) and docker/prometheus/metrics-token from it.
# Run again at any time: an existing .env is kept, a token it lacks is added, and a missing or
# stale metrics-token file (Prometheus's copy of LEARND_METRICS_TOKEN) is written again.
set -eu
cd "$(dirname "$0")"
rand() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
umask 077
if [ -f .env ]; then
  echo ".env exists; keeping it"
else
  echo "COMPOSE_PROJECT_NAME=learnd" > .env
fi
for key in LEARND_SERVING_TOKEN LEARND_METRICS_TOKEN GRAFANA_ADMIN_PASSWORD; do
  if ! grep -q "^$key=." .env; then
    grep -v "^$key=" .env > .env.partial || true  # drop an empty one
    echo "$key=$(rand)" >> .env.partial
    mv .env.partial .env
    echo "wrote $key to docker/.env"
  fi
done
metrics=$(sed -n 's/^LEARND_METRICS_TOKEN=//p' .env | tail -n 1)
if [ ! -f prometheus/metrics-token ] || [ "$(cat prometheus/metrics-token)" != "$metrics" ]; then
  printf '%s' "$metrics" > prometheus/metrics-token
  chmod 644 prometheus/metrics-token  # read by the prometheus container's user
  echo "wrote docker/prometheus/metrics-token"
fi
