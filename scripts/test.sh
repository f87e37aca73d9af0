#!/usr/bin/env bash
# One command on a fresh machine: set up .venv, lint, type-check the core, run every test.
# Broker variants without a Docker engine or LEARND_TEST_BOOTSTRAP_SERVERS skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
LEARND_EXTRAS=test,embedded,dev
. scripts/_venv.sh
.venv/bin/ruff check daemon adapters tests
.venv/bin/ruff format --check daemon adapters tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -rs "$@"
