"""The consumer process's freshest view of the log ends, beside its batches.

Each batch the child hands over carries the status it had when it was read, but a batch waits in
the pipe behind others (the pipe holds many), so the log end it carries is as old as the pipe is
deep. The child therefore also writes, after every poll, the log end it last saw per partition
(and where it began reading each) to a small pipe of its own, without ever blocking: a message
below ``PIPE_BUF`` bytes is written whole or not at all, and one that finds the pipe full is
dropped (the next carries newer numbers). The daemon drains that pipe at each poll and keeps the
last message. Records not yet learned are then ``end - where the daemon's batches end``: what
the child has not fetched, what it has fetched, and what waits in the pipe.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import select
from collections.abc import Mapping
from multiprocessing.connection import Connection

_LIMIT = select.PIPE_BUF - 4  # Connection frames a message with a 4-byte length


class EndsWriter:
    """The child's side: ``write`` never blocks."""

    def __init__(self, fd: int):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.conn = Connection(fd, readable=False)
        self.dropped = 0
        self._last: object = None

    def write(self, ends: Mapping[int, int], firsts: Mapping[int, int]) -> None:
        message = (dict(ends), dict(firsts))
        if message == self._last:
            return
        buf = pickle.dumps(message)
        if len(buf) > _LIMIT:  # thousands of partitions: the batches' status has to do
            self.dropped += 1
            return
        try:
            self.conn.send_bytes(buf)
        except BlockingIOError:
            self.dropped += 1
            return
        self._last = message

    def close(self) -> None:
        self.conn.close()


class EndsReader:
    """The daemon's side: ``drain`` keeps the newest message."""

    def __init__(self, fd: int):
        self.conn = Connection(fd, writable=False)
        self.ends: dict[int, int] = {}
        self.firsts: dict[int, int] = {}

    def drain(self) -> None:
        try:
            while self.conn.poll():
                self.ends, self.firsts = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            pass  # the child is gone: its batches' pipe says so, and a new one starts afresh

    def close(self) -> None:
        self.conn.close()


def not_handed_over(
    ends: Mapping[int, int],
    firsts: Mapping[int, int],
    handed: Mapping[int, int],
    fallback: Mapping[int, int],
) -> dict[int, int]:
    """Records per partition not yet handed to the daemon: from where its batches end (or,
    before the first, where the child began reading) to the log end; ``fallback`` (the child's
    own lag, from its last batch) for partitions without a log end yet.

    >>> not_handed_over({0: 900, 1: 500}, {0: 0, 1: 100}, {0: 300}, {0: 7, 2: 4})
    {0: 600, 2: 4, 1: 400}
    """
    out = dict(fallback)
    for p, end in ends.items():
        start = handed.get(p, firsts.get(p))
        if start is not None:
            out[p] = max(0, end - start)
    return out
