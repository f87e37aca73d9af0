# Sourced by scripts/demo.sh and scripts/test.sh: creates .venv and installs learnd into it.
# torch is installed first, pinned, so that no later requirement can pull a (multi-GB) CUDA
# build. Set LEARND_TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) for the CPU wheel
# where the default index would give a CUDA one, and LEARND_TORCH_SPEC for another version
# (see README).
set -euo pipefail
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "learnd: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check \
  ${LEARND_TORCH_INDEX_URL:+--index-url "$LEARND_TORCH_INDEX_URL"} "${LEARND_TORCH_SPEC:-torch==2.13.0}"
# LEARND_EDITABLE=0 (the container build) installs a plain copy instead of a link to the tree.
if [ "${LEARND_EDITABLE:-1}" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${LEARND_EXTRAS}]"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir ".[${LEARND_EXTRAS}]"
fi
