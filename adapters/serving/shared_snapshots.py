"""Served snapshots mirrored into serving processes through POSIX shared memory.

The daemon process owns the :class:`learnd.daemon.serving.snapshot.SnapshotRef`. A :class:`SnapshotChannel`
subscribes to it and writes every served snapshot into a shared-memory segment of its own, then
points a small control block at it. A snapshot travels as plain data, never as a pickle: a JSON
header and float arrays (``numpy.load(allow_pickle=False)``); a torch form travels as the dense
weights it was made from plus its form name, and is built again on arrival. The reader checks
what it reads (finite, shapes that chain from the inputs to the task's outputs) and refuses
anything else, counting it, while it keeps serving what it had. A serving process's :class:`SnapshotMirror`
checks the control block's sequence number before each request (one 8-byte read) and, when it
moved, loads the new snapshot into the serving process's own ``SnapshotRef`` with
:meth:`~learnd.daemon.serving.snapshot.SnapshotRef.adopt`: the same hot-swap mechanism, so an answer always
comes whole from one version and versions never go backwards.

Each block is a seqlock: the writer makes the sequence odd, writes, makes it even; a reader
that sees an odd or changed sequence reads again. Segments are created by the daemon with mode
0600 (the serving processes run as the same user), are named after the daemon's state
location and pid (:mod:`learnd.adapters.serving.segments`, which also removes those a killed
predecessor left) and are unlinked when it stops; readers map
them by name without registering them with Python's resource tracker, which would otherwise
unlink the daemon's segments when a serving process exits.
"""

from __future__ import annotations

import io
import logging
import mmap
import os
import struct
import threading
import time
from collections import deque
from multiprocessing import shared_memory

import numpy as np
import orjson

from learnd.adapters.serving.segments import create_segment, remove_segment
from learnd.daemon.serving.snapshot import Snapshot, SnapshotRef
from learnd.daemon.serving.snapshot_state import (
    BadSnapshotState,
    snapshot_from_state,
    snapshot_state,
)

log = logging.getLogger("learnd.serving")

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
    def create(cls, scope: str, size: int) -> SeqBlock:
        shm = create_segment(scope, HEADER.size + size)
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
            remove_segment(self._owner)
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


class BadSnapshot(ValueError):
    """A shared snapshot that cannot be served (truncated, malformed, non-finite...)."""


def encode(snap: Snapshot) -> bytes:
    """A snapshot as bytes: 4-byte header length, JSON header, then an ``.npz`` of its arrays.

    The content is the checkpoint's (:func:`~learnd.daemon.serving.snapshot_state.snapshot_state`),
    so both are read back by one checked constructor."""
    state = snapshot_state(snap)
    weights, biases = state.pop("weights"), state.pop("biases")
    arrays = {"x_mean": state.pop("x_mean"), "x_inv_std": state.pop("x_inv_std")}
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        arrays[f"w{i}"], arrays[f"b{i}"] = w, b
    state["layers"] = len(weights)
    if (typed := state.get("typed")) is not None:  # typed features: the table, and keys as lists
        arrays["typed_table"] = typed.pop("table")
        typed["vocabulary"] = {k: v.tolist() for k, v in typed["vocabulary"].items()}
    if np.isnan(state["latency_us"]):
        state["latency_us"] = None  # JSON has no NaN
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    head = orjson.dumps(state)
    return struct.pack("<I", len(head)) + head + buf.getvalue()


def decode(data: bytes) -> Snapshot:
    """The snapshot in ``data``, checked; raises :class:`BadSnapshot` with the reason."""
    try:
        (n,) = struct.unpack_from("<I", data, 0)
        state = orjson.loads(data[4 : 4 + n])
        with np.load(io.BytesIO(data[4 + n :]), allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        k = int(state.pop("layers"))
        state["weights"] = [arrays[f"w{i}"] for i in range(k)]
        state["biases"] = [arrays[f"b{i}"] for i in range(k)]
        state["x_mean"], state["x_inv_std"] = arrays["x_mean"], arrays["x_inv_std"]
        if state.get("typed") is not None:
            state["typed"]["table"] = arrays["typed_table"]
        if state.get("latency_us") is None:
            state["latency_us"] = float("nan")
        # JSON writes NaN as null: a metric not yet defined (log-loss before any event) is NaN
        state["metrics"] = {
            k: float("nan") if v is None else v for k, v in state["metrics"].items()
        }
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the bytes, say what
        raise BadSnapshot(f"unreadable: {type(e).__name__}: {e}") from None
    try:
        return snapshot_from_state(state)
    except BadSnapshotState as e:
        raise BadSnapshot(str(e)) from None


class SnapshotChannel:
    """The daemon's side: one segment per served snapshot (the newest ``keep`` kept), a control
    block naming the current one, and a block carrying the daemon's health answer."""

    def __init__(self, ref: SnapshotRef, scope: str, keep: int = 8):
        self.scope = scope
        self.control = SeqBlock.create(scope, 512)
        self.health = SeqBlock.create(scope, 64 * 1024)
        self._blobs: deque[shared_memory.SharedMemory] = deque()
        self._keep = keep
        self._lock = threading.Lock()
        ref.subscribe(self._publish)

    @property
    def names(self) -> tuple[str, str]:
        return self.control.name, self.health.name

    def _publish(self, snap: Snapshot) -> None:
        self.write_blob(snap.version, encode(snap))

    def write_blob(self, version: int, data: bytes) -> None:
        """Put ``data`` in a new segment and point the control block at it as ``version``."""
        blob = create_segment(self.scope, max(1, len(data)))
        blob.buf[: len(data)] = data
        with self._lock:
            self._blobs.append(blob)
            pointer = {"version": version, "name": blob.name, "size": len(data)}
            self.control.write(orjson.dumps(pointer))
            while len(self._blobs) > self._keep:  # a reader that is this far behind re-reads
                remove_segment(self._blobs.popleft())

    def set_health(self, health: dict) -> None:
        self.health.write(orjson.dumps(health))

    def close(self) -> None:
        with self._lock:
            self.control.close()
            self.health.close()
            while self._blobs:
                remove_segment(self._blobs.popleft())


class SnapshotMirror:
    """A serving process's side: keeps ``ref`` on the daemon's current snapshot."""

    def __init__(self, control: str, health: str, ref: SnapshotRef):
        self.control = SeqBlock.attach(control)
        self.health_block = SeqBlock.attach(health)
        self.ref = ref
        self._seen = -1
        self._lock = threading.Lock()  # the loop and the control thread both refresh
        self.loads = 0
        self.rejected = 0
        self.last_problem: str | None = None

    def refresh(self) -> None:
        """Adopt the daemon's newest snapshot if it changed since the last look."""
        if self.control.sequence() == self._seen:
            return
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
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
                snap = decode(blob[: pointer["size"]])
                if snap.version != pointer["version"]:
                    raise BadSnapshot(f"holds version {snap.version}, not {pointer['version']}")
            except BadSnapshot as e:
                self.rejected += 1
                self.last_problem = str(e)
                log.error(
                    "refused a shared snapshot; still serving version %s: %s",
                    current.version if current else None,
                    e,
                    extra={"event": "snapshot_rejected"},
                )
                self._seen = seq
                return
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
