"""Naming, creating and cleaning up the daemon's POSIX shared-memory segments.

A segment is named ``learnd_<scope>_<pid>_<random>``: ``scope`` is derived from where the daemon
keeps its state (its checkpoint directory, or S3 bucket and prefix), ``pid`` is the daemon
process that created it. A daemon removes its own segments when it stops, but one that is
killed outright (SIGKILL of its process group, the OOM killer) cannot, and neither can the
resource tracker that dies with it. So a daemon starting on a state location first removes the
segments of that scope whose creator is gone: a process that is no longer running, or one with
its own pid (a restarted container's daemon often has its predecessor's pid) that it did not
create itself. A crash-looping daemon leaves at most one crash's segments behind.

Segments of another scope are never touched, nor those of a process still running: two daemons
on different state never remove each other's, whatever their pids.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from multiprocessing import shared_memory
from pathlib import Path

from learnd.daemon.config import CheckpointConfig

log = logging.getLogger("learnd.serving")

SHM_DIR = Path("/dev/shm")
_NAME = re.compile(r"^learnd_([0-9a-f]{8})_(\d+)_[0-9a-f]+$")
_CREATED: set[str] = set()  # segments this process created and has not removed


def segment_scope(checkpoint: CheckpointConfig) -> str:
    """Eight hex digits naming the state location of ``checkpoint``."""
    if checkpoint.store == "s3":
        where = f"s3://{checkpoint.s3_bucket}/{checkpoint.s3_prefix}"
    else:
        where = str(Path(checkpoint.dir).resolve())
    return hashlib.sha256(where.encode()).hexdigest()[:8]


def segment_prefix(scope: str, pid: int | None = None) -> str:
    """The name prefix of the segments a daemon process (default: this one) creates."""
    return f"learnd_{scope}_{os.getpid() if pid is None else pid}_"


def create_segment(scope: str, size: int) -> shared_memory.SharedMemory:
    while True:
        name = segment_prefix(scope) + secrets.token_hex(4)
        try:
            shm = shared_memory.SharedMemory(name, create=True, size=size)
        except FileExistsError:  # a name drawn twice: draw again
            continue
        _CREATED.add(shm.name)
        return shm


def remove_segment(shm: shared_memory.SharedMemory) -> None:
    shm.close()
    shm.unlink()
    _CREATED.discard(shm.name)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True


def remove_stale_segments(scope: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink the segments of ``scope`` left by daemons that are gone; return their names."""
    if not shm_dir.is_dir():
        return []
    removed, size = [], 0
    for path in shm_dir.iterdir():
        m = _NAME.match(path.name)
        if m is None or m.group(1) != scope or path.name in _CREATED:
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and _running(pid):
            continue
        try:
            size += path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # removed meanwhile
            continue
        removed.append(path.name)
    if removed:
        log.warning(
            "removed %d shared-memory segments (%d KiB) left by a daemon that did not stop",
            len(removed),
            size // 1024,
            extra={"event": "shm_cleanup", "segments": len(removed), "bytes": size},
        )
    return removed
