"""The demo's state folder: which one a run uses, and what an earlier run left behind.

A demo without ``--state-dir`` works in a fresh temporary folder. A run writes ``demo.pid`` there
and removes it when it stops cleanly, so a folder that still holds one whose process is gone
belongs to a demo that was killed. A new run names the newest earlier folder that holds
checkpoints, and how to resume it, instead of starting over silently.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from learnd.daemon.errors import StartupError

PREFIX = "learnd-demo-"
PID_FILE = "demo.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _holder(folder: Path) -> int | None:
    """The pid of the live demo using ``folder``, if any."""
    try:
        pid = int((folder / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _alive(pid) else None


def has_checkpoints(folder: Path) -> bool:
    return any((folder / "checkpoints").glob("ckpt-*.pt"))


def earlier(tmp: str | None = None) -> tuple[Path, bool] | None:
    """The newest earlier demo folder with checkpoints that no live demo uses, and whether its
    demo was killed (it never removed its pid file)."""
    found = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            if folder.is_dir() and has_checkpoints(folder) and _holder(folder) is None:
                found.append((folder.stat().st_mtime, folder))
        except OSError:
            continue
    if not found:
        return None
    newest = max(found)[1]
    return newest, (newest / PID_FILE).exists()


def claim(folder: Path) -> None:
    """Mark ``folder`` as used by this process; refuse a folder a live demo uses."""
    folder.mkdir(parents=True, exist_ok=True)
    pid = _holder(folder)
    if pid is not None:
        raise StartupError(f"--state-dir {folder} is in use by a running demo (pid {pid})")
    (folder / PID_FILE).write_text(f"{os.getpid()}\n")


def release(folder: Path) -> None:
    (folder / PID_FILE).unlink(missing_ok=True)
