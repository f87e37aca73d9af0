#!/usr/bin/env bash
# One command on a fresh machine: set up .venv, then run `learnd demo` (embedded broker + a
# drifting synthetic stream + the daemon, with live progress). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
LEARND_EXTRAS=embedded
. scripts/_venv.sh
exec .venv/bin/learnd demo "$@"
