#!/usr/bin/env bash
# mypy on the core (learnd.daemon) under its installed name. The editable install maps the
# folders daemon/ and adapters/ to learnd.daemon and learnd.adapters with an import hook, which
# mypy does not follow, so the same mapping is laid out as links under build/typecheck/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/typecheck/learnd
ln -sfn ../../../daemon build/typecheck/learnd/daemon
ln -sfn ../../../adapters build/typecheck/learnd/adapters
exec "${MYPY:-.venv/bin/mypy}" "$@"
