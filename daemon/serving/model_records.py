"""The records of the models topic: served snapshots, cut into chunks, and pin changes.

A learner writes every snapshot it serves to ``kafka.models_topic`` so that serving replicas on
other hosts serve it too. The snapshot travels in the bytes the local serving processes read
from shared memory (:func:`learnd.adapters.serving.shared_snapshots.encode`: a JSON header and an
``.npz``), cut into chunks of at most ``kafka.models_chunk_bytes``. Each record's value is a
fixed frame and a payload:

=========  ======  ===========================================================================
bytes      type    field
=========  ======  ===========================================================================
0-3        bytes   magic ``LRNM``
4-5        u16     record format (:data:`FORMAT`); a reader refuses formats it does not know
6          u8      kind: 1 snapshot chunk, 2 pin
7          u8      reserved (0)
8-15       u64     model version
16-19      u32     chunk index (0 for a pin record)
20-23      u32     chunk count (1 for a pin record)
24-31      u64     size of the whole encoded snapshot (of the payload for a pin record)
32-35      u32     payload length of this record
36-39      u32     CRC-32 of this record's payload
40-71      bytes   SHA-256 of the whole encoded snapshot (of the payload for a pin record)
72-        bytes   payload
=========  ======  ===========================================================================

Integers are little-endian. A pin record's payload is JSON ``{"pinned": bool, "version": int}``:
the learner's serving was pinned by a rollback (or unpinned) while ``version`` was served. A
rollback itself is a snapshot record: the rolled-back model under a new version, with
``rolled_back_from`` in its header. Keys are ``snapshot/<version>/<index>`` and ``pin``; after a
snapshot's last chunk the learner writes tombstones for the previous snapshot's keys, so a
compacted topic keeps the newest complete snapshot and the newest pin record.

Examples
--------
>>> chunks = snapshot_records(7, b"x" * 10, chunk_bytes=4)
>>> [parse_record(v).index for _, v in chunks]
[0, 1, 2]
>>> asm = Assembler()
>>> [asm.add(parse_record(v)) for _, v in reversed(chunks)][-1]
b'xxxxxxxxxx'
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import orjson

from learnd.daemon.config import SchemaConfig
from learnd.daemon.serving.snapshot import Snapshot

MAGIC = b"LRNM"
FORMAT = 1
KIND_SNAPSHOT, KIND_PIN = 1, 2
FRAME = struct.Struct("<4sHBBQIIQII32s")
PIN_KEY = b"pin"


class BadRecord(ValueError):
    """A models-topic record that cannot be used; ``reason`` is a bounded label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    version: int
    index: int
    count: int
    total: int
    digest: bytes
    payload: bytes


def snapshot_key(version: int, index: int) -> bytes:
    return f"snapshot/{version}/{index}".encode()


def _frame(kind: int, version: int, index: int, count: int, total: int, digest: bytes, part: bytes):
    head = FRAME.pack(
        MAGIC, FORMAT, kind, 0, version, index, count, total, len(part), zlib.crc32(part), digest
    )
    return head + part


def snapshot_records(version: int, data: bytes, chunk_bytes: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of each chunk of the encoded snapshot ``data`` of ``version``."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be at least 1")
    digest = hashlib.sha256(data).digest()
    count = max(1, -(-len(data) // chunk_bytes))
    return [
        (
            snapshot_key(version, i),
            _frame(
                KIND_SNAPSHOT,
                version,
                i,
                count,
                len(data),
                digest,
                data[i * chunk_bytes : (i + 1) * chunk_bytes],
            ),
        )
        for i in range(count)
    ]


def pin_record(pinned: bool, version: int) -> tuple[bytes, bytes]:
    """(key, value) saying that serving is (or no longer is) pinned at ``version``."""
    payload = orjson.dumps({"pinned": bool(pinned), "version": int(version)})
    digest = hashlib.sha256(payload).digest()
    return PIN_KEY, _frame(KIND_PIN, version, 0, 1, len(payload), digest, payload)


def parse_record(value: bytes | None) -> Record:
    """The record in ``value``, its frame and payload checked; raises :class:`BadRecord`."""
    if value is None:
        raise BadRecord("tombstone", "a deleted key (no value)")
    if len(value) < FRAME.size:
        raise BadRecord(
            "truncated", f"{len(value)} bytes, shorter than the {FRAME.size}-byte frame"
        )
    magic, fmt, kind, _, version, index, count, total, n, crc, digest = FRAME.unpack_from(value)
    if magic != MAGIC:
        raise BadRecord("format", f"not a learnd models record (magic {magic!r})")
    if fmt != FORMAT:
        raise BadRecord("format", f"record format {fmt}; this learnd reads format {FORMAT}")
    if kind not in (KIND_SNAPSHOT, KIND_PIN):
        raise BadRecord("format", f"unknown record kind {kind}")
    payload = value[FRAME.size :]
    if len(payload) != n:
        raise BadRecord("truncated", f"payload of {len(payload)} bytes, the frame says {n}")
    if zlib.crc32(payload) != crc:
        raise BadRecord("checksum", f"chunk {index} of version {version}: CRC-32 mismatch")
    if count < 1 or index >= count:
        raise BadRecord("format", f"chunk {index} of {count}")
    return Record(kind, version, index, count, total, digest, payload)


def parse_pin(record: Record) -> tuple[bool, int]:
    """(pinned, version) of a pin record."""
    try:
        body = orjson.loads(record.payload)
        return bool(body["pinned"]), int(body["version"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise BadRecord("format", f"pin record: {type(e).__name__}: {e}") from None


class Assembler:
    """Joins chunks into whole snapshots, in any order. Chunks of at most ``keep`` versions
    wait at once (the oldest is dropped for a newer one); a version older than the newest
    completed is ignored. :meth:`add` returns a snapshot's bytes when its last missing chunk
    arrives and the whole matches its size and SHA-256, else None; it raises
    :class:`BadRecord` for a whole that does not match, or a chunk that contradicts its
    siblings."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._parts: dict[int, dict[int, Record]] = {}
        self.completed = 0  # the newest version completed
        self.dropped_incomplete = 0  # versions given up with chunks missing

    @property
    def waiting(self) -> dict[int, tuple[int, int]]:
        """version -> (chunks held, chunks in all), for the versions still incomplete."""
        return {v: (len(p), next(iter(p.values())).count) for v, p in self._parts.items()}

    def add(self, rec: Record) -> bytes | None:
        if rec.kind != KIND_SNAPSHOT or rec.version <= self.completed:
            return None
        parts = self._parts.setdefault(rec.version, {})
        first = next(iter(parts.values()), rec)
        if (first.count, first.total, first.digest) != (rec.count, rec.total, rec.digest):
            del self._parts[rec.version]
            self.dropped_incomplete += 1
            raise BadRecord("format", f"chunks of version {rec.version} disagree on the whole")
        parts[rec.index] = rec
        while len(self._parts) > self.keep:
            del self._parts[min(self._parts)]
            self.dropped_incomplete += 1
        if len(parts) < rec.count:
            return None
        del self._parts[rec.version]
        for v in [v for v in self._parts if v < rec.version]:
            del self._parts[v]
            self.dropped_incomplete += 1
        self.completed = rec.version
        data = b"".join(parts[i].payload for i in range(rec.count))
        if len(data) != rec.total:
            raise BadRecord("truncated", f"version {rec.version}: {len(data)} of {rec.total} bytes")
        if hashlib.sha256(data).digest() != rec.digest:
            raise BadRecord("checksum", f"version {rec.version}: SHA-256 of the whole mismatch")
        return data


def schema_problem(snap: Snapshot, schema: SchemaConfig) -> str | None:
    """Why ``snap`` cannot answer requests of ``schema`` (task, features, classes), or None."""
    if snap.task != schema.task:
        return f"task {snap.task!r}, this replica serves {schema.task!r}"
    if snap.dim != schema.dim:
        return f"{snap.dim} features, this replica's schema has {schema.dim}"
    if schema.features is not None and snap.feature_names != tuple(schema.features):
        return "feature names differ from this replica's schema.features"
    if schema.task != "regression" and tuple(snap.classes) != tuple(schema.class_values):
        return (
            f"classes {list(snap.classes)}, this replica's schema has {list(schema.class_values)}"
        )
    return None
