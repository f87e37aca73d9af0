#!/usr/bin/env bash
# Regenerate the benchmark pictures in docs/img (about 10 minutes on 2 idle cores): installs the
# bench extra into .venv, then runs the benchmarks that draw them, niced.
set -euo pipefail
cd "$(dirname "$0")/.."
LEARND_EXTRAS=bench
. scripts/_venv.sh
# Accuracy through SEA's and Agrawal's concept switches, learnd against river and VW.
nice -n 10 .venv/bin/python bench/quality.py --streams SEA,Agrawal --plots docs/img "$@"
