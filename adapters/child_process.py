"""What every child process of the daemon does first: make sure it never outlives the daemon.

An orphaned child would hold the daemon's sockets, output pipes or consumer-group membership.
"""

from __future__ import annotations

import os
import signal
import threading
import time


def die_with_parent(parent: int) -> None:
    """Exit now if the daemon (pid ``parent``) is already gone, and as soon as it goes: Linux
    sends SIGTERM on its death (PR_SET_PDEATHSIG); a thread watching the parent pid covers
    other systems, within a fifth of a second. Ctrl-C reaches the daemon, which stops us."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the daemon died while this process was starting
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
