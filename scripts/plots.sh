#!/usr/bin/env bash
# Regenerate the benchmark pictures in docs/img (about 11 minutes on 2 idle cores): installs the
# bench extra into .venv, then runs the benchmarks that draw them, niced.
set -euo pipefail
cd "$(dirname "$0")/.."
LEARND_EXTRAS=bench
. scripts/_venv.sh
# Accuracy through SEA's and Agrawal's concept switches, learnd against river and VW.
nice -n 10 .venv/bin/python bench/quality.py --streams SEA,Agrawal --plots docs/img "$@"
# The README's picture: served (asked over the socket) against learned accuracy through SEA's
# switches fed live at 5,000 events/s, with river's logistic regression as the anchor.
nice -n 10 .venv/bin/python bench/freshness.py --events 20000 --paces 5000 --streams SEA --no-burst
