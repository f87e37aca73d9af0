"""Served snapshots mirrored into serving processes through POSIX shared memory.

The daemon process owns the :class:`daemon.snapshot.SnapshotRef`. A :class:`SnapshotChannel`
subscribes to it and writes every served snapshot, pickled, into a shared-memory segment of its
own, then points a small control block at it. A serving process's :class:`SnapshotMirror`
checks the control block's sequence number before each request (one 8-byte read) and, when it
moved, loads the new snapshot into the serving process's own ``SnapshotRef`` with
:meth:`~daemon.snapshot.SnapshotRef.adopt`: the same hot-swap mechanism, so an answer always
comes whole from one version and versions never go backwards.

Each block is a seqlock: the writer makes the sequence odd, writes, makes it even; a reader
that sees an odd or changed sequence reads again. Segments are created by the daemon with mode
0600 (the serving processes run as the same user) and are unlinked when it stops; readers map
them by name without registering them with Python's resource tracker, which would otherwise
unlink the daemon's segments when a serving process exits.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import threading
import time
import warnings
from collections import deque
from multiprocessing import shared_memory

import orjson

from daemon.snapshot import Snapshot, SnapshotRef

HEADER = struct.Struct("<QI")  # sequence, payload length


class SeqBlock:
    """A shared-memory block holding one payload that one writer replaces and readers read
    consistently."""

    def __init__(self, buf, name: str, owner: shared_memory.SharedMemory | None = None):
        self.buf = buf
        self.name = name
        self._owner = owner
        self._seq = 0

    @classmethod
    def create(cls, size: int) -> SeqBlock:
        shm = shared_memory.SharedMemory(create=True, size=HEADER.size + size)
        return cls(shm.buf, shm.name, owner=shm)

    @classmethod
    def attach(cls, name: str, writable: bool = False) -> SeqBlock:
        return cls(_map(name, writable), name)

    @property
    def capacity(self) -> int:
        return len(self.buf) - HEADER.size

    def sequence(self) -> int:
        return HEADER.unpack_from(self.buf, 0)[0]

    def write(self, payload: bytes) -> None:
        if len(payload) > self.capacity:
            raise ValueError(f"payload of {len(payload)} bytes exceeds the block ({self.capacity})")
        seq = self.sequence()
        HEADER.pack_into(self.buf, 0, seq + 1, 0)  # odd: being written
        self.buf[HEADER.size : HEADER.size + len(payload)] = payload
        HEADER.pack_into(self.buf, 0, seq + 2, len(payload))

    def read(self) -> tuple[int, bytes]:
        """(sequence, payload) of a consistent state."""
        for _ in range(10_000):
            seq, n = HEADER.unpack_from(self.buf, 0)
            if seq % 2 == 0:
                payload = bytes(self.buf[HEADER.size : HEADER.size + n])
                if HEADER.unpack_from(self.buf, 0)[0] == seq:
                    return seq, payload
            time.sleep(0)
        raise TimeoutError(f"shared block {self.name} stayed mid-write")

    def close(self) -> None:
        if self._owner is not None:
            self.buf = None  # release the exported memoryview before closing
            self._owner.close()
            self._owner.unlink()
            self._owner = None
        elif isinstance(self.buf, mmap.mmap):
            self.buf.close()


def _map(name: str, writable: bool) -> mmap.mmap:
    fd = os.open(f"/dev/shm/{name.lstrip('/')}", os.O_RDWR if writable else os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    finally:
        os.close(fd)


class SnapshotChannel:
    """The daemon's side: one segment per served snapshot (the newest ``keep`` kept), a control
    block naming the current one, and a block carrying the daemon's health answer."""

    def __init__(self, ref: SnapshotRef, keep: int = 8):
        self.control = SeqBlock.create(512)
        self.health = SeqBlock.create(64 * 1024)
        self._blobs: deque[shared_memory.SharedMemory] = deque()
        self._keep = keep
        self._lock = threading.Lock()
        ref.subscribe(self._publish)

    @property
    def names(self) -> tuple[str, str]:
        return self.control.name, self.health.name

    def _publish(self, snap: Snapshot) -> None:
        data = pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL)
        blob = shared_memory.SharedMemory(create=True, size=max(1, len(data)))
        blob.buf[: len(data)] = data
        with self._lock:
            self._blobs.append(blob)
            pointer = {"version": snap.version, "name": blob.name, "size": len(data)}
            self.control.write(orjson.dumps(pointer))
            while len(self._blobs) > self._keep:  # a reader that is this far behind re-reads
                old = self._blobs.popleft()
                old.close()
                old.unlink()

    def set_health(self, health: dict) -> None:
        self.health.write(orjson.dumps(health))

    def close(self) -> None:
        with self._lock:
            self.control.close()
            self.health.close()
            while self._blobs:
                old = self._blobs.popleft()
                old.close()
                old.unlink()


class SnapshotMirror:
    """A serving process's side: keeps ``ref`` on the daemon's current snapshot."""

    def __init__(self, control: str, health: str, ref: SnapshotRef):
        self.control = SeqBlock.attach(control)
        self.health_block = SeqBlock.attach(health)
        self.ref = ref
        self._seen = -1
        self.loads = 0

    def refresh(self) -> None:
        """Adopt the daemon's newest snapshot if it changed since the last look."""
        if self.control.sequence() == self._seen:
            return
        seq, payload = self.control.read()
        if not payload:
            return
        pointer = orjson.loads(payload)
        current = self.ref.current
        if current is None or pointer["version"] > current.version:
            try:
                blob = _map(pointer["name"], writable=False)
            except (
                FileNotFoundError
            ):  # replaced and removed meanwhile: the next look finds its successor
                return
            try:
                with warnings.catch_warnings():  # torch's unpickling of storages is noisy
                    warnings.simplefilter("ignore", UserWarning)
                    snap = pickle.loads(blob[: pointer["size"]])
            finally:
                blob.close()
            self.ref.adopt(snap)
            self.loads += 1
        self._seen = seq

    def health(self) -> dict:
        _, payload = self.health_block.read()
        return orjson.loads(payload) if payload else {"alive": True, "ready": False}

    def close(self) -> None:
        self.control.close()
        self.health_block.close()
