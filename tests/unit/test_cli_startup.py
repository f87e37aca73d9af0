"""`learnd run` refuses a bad config before it imports torch (seconds on a small machine)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
from learnd.adapters.cli.main import main
code = main(["run", "--set", "kafka.topik=x"])
print(code, "torch" in sys.modules)
"""


def test_a_config_typo_is_refused_without_importing_torch():
    env = {**os.environ, "LEARND_CONFIG": "", "LEARND_SCHEMA__N_FEATURES": "3"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "kafka.topik: unknown key" in out.stderr


SERVE_PROBE = """
import sys
from learnd.adapters.cli.main import main
code = main(["serve"])
print(code, "torch" in sys.modules)
"""


def test_serve_without_a_models_topic_is_refused_naming_it_and_imports_no_torch():
    env = {**os.environ, "LEARND_CONFIG": "", "LEARND_SCHEMA__N_FEATURES": "3"}
    out = subprocess.run(
        [sys.executable, "-c", SERVE_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "learnd serve follows kafka.models_topic, which is not set" in out.stderr
