"""What every child process of the daemon does first: make sure it never outlives the daemon,
and that only the daemon stops it.

An orphaned child would hold the daemon's sockets, output pipes or consumer-group membership.
A stop signal meant for the daemon often reaches its children too: Ctrl-C goes to the terminal's
whole process group, and so does SIGTERM from systemd (``KillMode=control-group``, its default),
``timeout`` or ``kill -- -PGID``. A child that died of it would leave the daemon's shutdown a
consumer short (no final commit, no leaving the group: the daemon would log it as lost and start
another) or stop serving while the daemon still checkpoints. So children ignore both; the daemon
stops them in order, and the kernel kills them outright should the daemon die first.
"""

from __future__ import annotations

import os
import signal
import threading
import time


def die_with_parent(parent: int) -> None:
    """Exit now if the daemon (pid ``parent``) is already gone, and as soon as it goes: Linux
    sends SIGKILL on its death (PR_SET_PDEATHSIG); a thread watching the parent pid covers
    other systems, within a fifth of a second. SIGINT and SIGTERM are ignored from here on: they
    are the daemon's to act on, and it stops its children itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the daemon died while this process was starting
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
