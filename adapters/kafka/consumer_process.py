"""Consuming and decoding in a process of their own, overlapping learning on another core.

kafka-python parses every record in Python, and decoding an event costs about a microsecond on
top: in the learning thread the two took about two thirds of the time per event, and a second
thread does not overlap them with learning under one GIL (measured slower than one thread;
README). With ``kafka.consumer_process: true`` (the default) the Kafka client, either one, and
the :class:`learnd.daemon.events.decoder.EventDecoder` run in a child process that hands the learning thread
decoded batches (:class:`learnd.daemon.events.decoder.Decoded`: arrays, cheap to pickle) over a pipe.
With ``labels.mode = "join"`` it decodes with :class:`learnd.daemon.labels.records.JoinDecoder`,
which also turns unlabelled events into rows for the join (docs/labels.md).
(Handing over raw records as columns and decoding in the learning thread was measured too:
82.7k events/s against 94.2k, medians of 3 on 200k events, bench/e2e.py.)

What is the same as in one process:

- *Positions.* The child is the group member, but it seeks only where the daemon says (at
  start: the checkpoint's positions) or where what it handed over ends. A child that dies is
  replaced by one that starts where the last batch handed over ended; nothing is lost or learned
  twice.
- *The rebalance hand-over.* The child's revocation callback tells the daemon, which, inside its
  own poll (the learner idle), learns everything handed over before, checkpoints, and answers
  with the positions to commit; the child commits them before the partitions go.
- *Logs.* The child's log records come back over the pipe and are emitted by the daemon's
  loggers: one log stream, in one format.
- *Metrics.* The child's counters, lag and connection state come with every message.

Back-pressure: a pipe holds a message or two (each at most ``kafka.max_poll_records`` events);
a child that is ahead blocks in ``send`` while kafka-python keeps heartbeating from its own
thread. The child never outlives the daemon (:mod:`learnd.adapters.child_process`; its next send fails
too).
"""

from __future__ import annotations

import fcntl
import logging
import logging.handlers
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from learnd.adapters.child_process import die_with_parent
from learnd.adapters.kafka.log_ends import EndsReader, EndsWriter, not_handed_over
from learnd.daemon.config import LearndConfig
from learnd.daemon.events.decoder import Decoded, EventDecoder, Rejection
from learnd.daemon.events.record import RawRecord, Record
from learnd.daemon.labels.records import JoinDecoder

log = logging.getLogger("learnd.kafka")

RESTART_DELAY_S = 1.0
# A pipe that holds a whole batch (Linux allows up to /proc/sys/fs/pipe-max-size, 1 MiB by
# default): the child writes it without waiting for the learning thread to read.
PIPE_BYTES = 1 << 20
CLOSE_TIMEOUT_S = 15.0
_LOGGERS = ("", "learnd", "kafka")  # whose levels the child copies


class ConsumerProcess:
    """The daemon's side: an :class:`learnd.daemon.ports.EventSource` whose client runs in a child."""

    def __init__(self, cfg: LearndConfig):
        self.cfg = cfg
        self._proc: subprocess.Popen | None = None
        self._data: Connection | None = None  # child -> daemon: batches, status, logs
        self._commands: Connection | None = None  # daemon -> child: seek, commit, close
        self._ends: EndsReader | None = None  # child -> daemon: the log ends it saw last
        self._positions: dict[int, int] = {}  # where what was handed over ends
        self._status: dict[str, Any] = _idle_status()
        self._carried = dict.fromkeys(_COUNTERS, 0)  # the counters of children gone
        self._revoked = False
        self._revoke_handler: Callable[[], Mapping[int, int] | None] | None = None
        self._restart_at = 0.0
        self.restarts = 0

    # ---------------------------------------------------------------- the EventSource port

    def poll(self, timeout_s: float) -> Sequence[RawRecord] | Decoded:
        if self._proc is None and not self._start():
            time.sleep(timeout_s)
            return []
        assert self._data is not None and self._ends is not None
        try:
            got = self._data.poll(timeout_s)
            self._ends.drain()
            if not got:
                return []
            kind, payload, status, logs = self._data.recv()
        except (EOFError, OSError):
            self._lost()
            return []
        _emit(logs)
        if kind == "failed":  # its last words: logs only
            return []
        self._status = status
        self._revoked |= status["revoked"]
        if kind == "revoke":  # the child waits in its revocation callback for our answer
            positions = self._revoke_handler() if self._revoke_handler is not None else None
            self._send("handed_over", positions)
            return []
        if kind == "records" and payload is not None:
            self._positions.update(payload.positions)
            return payload
        return []

    def seek(self, positions: Mapping[int, int]) -> None:
        self._positions.update(positions)
        self._send("seek", dict(positions))

    def commit(self, positions: Mapping[int, int]) -> None:
        self._send("commit", dict(positions))

    def lag(self) -> Mapping[int, int]:
        """Records not yet handed to the daemon: not fetched, or fetched and in the pipe."""
        if self._ends is None:
            return dict(self._status["lag"])
        return not_handed_over(
            self._ends.ends, self._ends.firsts, self._positions, self._status["lag"]
        )

    def assigned(self) -> int:
        return self._status["assigned"]

    def connected(self) -> bool:
        return self._status["connected"]

    def take_revoked(self) -> bool:
        revoked, self._revoked = self._revoked, False
        return revoked

    def on_revoke(self, handler: Callable[[], Mapping[int, int] | None]) -> None:
        self._revoke_handler = handler

    def close(self) -> None:
        """Stop the child; it commits what it was told to and leaves the group first."""
        if self._proc is None:
            return
        self._send("close", None)
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while self._proc.poll() is None and time.monotonic() < deadline:
            try:  # drain: a child blocked sending a batch would never read "close"
                if self._data is not None and self._data.poll(0.05):
                    _kind, _payload, _status, logs = self._data.recv()
                    _emit(logs)  # batches not learned: re-read from the checkpoint's positions
            except (EOFError, OSError):
                break
        try:
            self._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("the consumer process did not stop; killing it")
            self._proc.kill()
            self._proc.wait(5)
        self._forget()

    # ---------------------------------------------------------------- the child's counters

    @property
    def out_of_range_resets(self) -> int:
        return self._counter("out_of_range_resets")

    @property
    def skipped_records(self) -> int:
        return self._counter("skipped_records")

    @property
    def handovers(self) -> int:
        return self._counter("handovers")

    @property
    def handover_commit_failures(self) -> int:
        return self._counter("handover_commit_failures")

    def _counter(self, name: str) -> int:
        """Counted by every child so far: a replaced child starts from 0, the metric does not."""
        return self._carried[name] + self._status[name]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ---------------------------------------------------------------- lifetime

    def _start(self) -> bool:
        if time.monotonic() < self._restart_at:
            return False
        data_r, data_w = os.pipe()
        commands_r, commands_w = os.pipe()
        ends_r, ends_w = os.pipe()
        _widen(data_w, PIPE_BYTES)
        # A plain interpreter on our module, not multiprocessing's spawn: spawn re-imports the
        # daemon's __main__ (the learnd script: torch and all), and a child holding torch was
        # measured ~20% slower at consuming (bench/e2e.py). The child imports learnd as the
        # daemon did: from the installed package, with the daemon's environment.
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "learnd.adapters.kafka.consumer_process",
                str(data_w),
                str(commands_r),
                str(ends_w),
            ],
            pass_fds=(data_w, commands_r, ends_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(data_w)  # the child holds the only write end: its death reads as EOF
        os.close(commands_r)
        os.close(ends_w)
        self._ends = EndsReader(ends_r)
        self._proc = proc
        self._data = Connection(data_r, writable=False)
        self._commands = Connection(commands_w, readable=False)
        levels = {name: logging.getLogger(name).getEffectiveLevel() for name in _LOGGERS}
        self._send("start", (self.cfg, dict(self._positions), os.getpid(), levels))
        log.info(
            "consumer process %d started",
            proc.pid,
            extra={"event": "consumer_start", "pid": proc.pid, "positions": dict(self._positions)},
        )
        return True

    def _lost(self) -> None:
        """The child is gone (crashed or killed): start another where the handed-over ends."""
        assert self._proc is not None
        try:
            code = self._proc.wait(1)
        except subprocess.TimeoutExpired:  # its pipe broke but it lives on: end it
            self._proc.kill()
            code = self._proc.wait(5)
        log.error(
            "the consumer process exited (code %s); starting another at %s",
            code,
            self._positions,
            extra={"event": "consumer_restart", "positions": dict(self._positions)},
        )
        self._forget()
        self.restarts += 1
        self._restart_at = time.monotonic() + RESTART_DELAY_S

    def _forget(self) -> None:
        for conn in (self._data, self._commands, self._ends):
            if conn is not None:
                conn.close()
        self._proc = self._data = self._commands = self._ends = None
        for name in _COUNTERS:
            self._carried[name] += self._status[name]
        self._status = _idle_status()

    def _send(self, kind: str, payload: Any) -> None:
        if self._commands is None:
            return  # no child: a new one starts from self._positions
        try:
            self._commands.send((kind, payload))
        except OSError:
            pass  # the child is gone; the next poll notices and replaces it


_COUNTERS = ("out_of_range_resets", "skipped_records", "handovers", "handover_commit_failures")


def _idle_status() -> dict[str, Any]:
    return {"lag": {}, "assigned": 0, "connected": False, "revoked": False} | dict.fromkeys(
        _COUNTERS, 0
    )


def _widen(fd: int, size: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass  # not Linux, or above the system's limit: the default size works, a little slower


def _emit(records: list[logging.LogRecord]) -> None:
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


# -------------------------------------------------------------------- the child process


class _LogBuffer:
    """A QueueHandler's queue: records wait here for the next message to the daemon (they come
    from the consuming thread and from kafka-python's IO thread; deque appends are atomic)."""

    def __init__(self) -> None:
        self.records: deque[logging.LogRecord] = deque()

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        out = []
        while self.records:
            out.append(self.records.popleft())
        return out


def main(argv: Sequence[str]) -> None:
    """The consumer process: ``python -m learnd.adapters.kafka.consumer_process DATA_FD
    COMMANDS_FD ENDS_FD``."""
    out = Connection(int(argv[0]), readable=False)
    commands = Connection(int(argv[1]), writable=False)
    ends = EndsWriter(int(argv[2]))
    kind, (cfg, positions, parent, levels) = commands.recv()
    assert kind == "start", kind
    die_with_parent(parent)
    logs = _LogBuffer()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(logs)]  # type: ignore[arg-type]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        _Consumer(cfg, out, commands, logs, ends).run(positions)
    except (BrokenPipeError, EOFError):
        pass  # the daemon is gone
    except Exception:
        log.exception("the consumer process failed")
        try:
            out.send(("failed", None, _idle_status(), logs.take()))
        except OSError:
            pass
        raise SystemExit(1) from None


class _Consumer:
    def __init__(
        self,
        cfg: LearndConfig,
        out: Connection,
        commands: Connection,
        logs: _LogBuffer,
        ends: EndsWriter,
    ):
        from learnd.adapters.kafka.clients import client_source_class

        self.cfg = cfg
        self.out = out
        self.commands = commands
        self.logs = logs
        self.ends = ends
        self.source = client_source_class(cfg.kafka)(cfg.kafka)
        self.source.on_revoke(self._hand_over)
        # with the join, unlabelled events are decoded here too, into rows it takes as they are
        join = cfg.labels.mode == "join"
        self.decoder = JoinDecoder(cfg.schema_) if join else EventDecoder(cfg.schema_)
        self.waiting: deque[tuple[str, Any]] = deque()  # commands read during a hand-over
        self.closing = False

    def run(self, positions: dict[int, int]) -> None:
        if positions:
            self.source.seek(positions)
        timeout_s = self.cfg.kafka.poll_timeout_ms / 1000
        try:
            while True:
                self._apply_commands()
                if self.closing:
                    break
                records = self.source.poll(timeout_s)
                self.ends.write(self.source.ends(), self.source.first_offsets)
                decoded = self._decode(records) if records else None
                self._send("records", decoded, bool(records), self.source.take_revoked())
        finally:
            self.source.close()
            if self.closing:
                self._send("closed", None, False, False)

    def _decode(self, records: Sequence[RawRecord]) -> Decoded:
        decoded = self.decoder.decode(records)
        if not decoded.rejections:
            return decoded
        # a rejection travels with its record as a plain Record (a client's own may not pickle)
        plain = [Rejection(_plain(r.record), r.reason, r.detail) for r in decoded.rejections]
        return Decoded(decoded.events, plain, decoded.positions, unlabelled=decoded.unlabelled)

    def _apply_commands(self) -> None:
        while self.waiting or self.commands.poll():
            kind, payload = self.waiting.popleft() if self.waiting else self.commands.recv()
            if kind == "seek":
                self.source.seek(payload)
            elif kind == "commit":
                self.source.commit(payload)
            elif kind == "close":
                self.closing = True

    def _hand_over(self) -> Mapping[int, int] | None:
        """Called by the source inside its poll when partitions are revoked: the daemon learns
        what it was handed, checkpoints, and answers with the positions to commit."""
        self._send("revoke", None, True, False)
        deadline = time.monotonic() + self.cfg.kafka.max_poll_interval_ms / 1000
        while (left := deadline - time.monotonic()) > 0:
            if not self.commands.poll(min(left, 1.0)):
                continue
            kind, payload = self.commands.recv()
            if kind == "handed_over":
                return payload
            if kind == "close":
                self.closing = True
                return None
            self.waiting.append((kind, payload))
        log.warning("the daemon did not answer the hand-over in time; committing nothing")
        return None

    def _send(self, kind: str, payload: Any, connected: bool, revoked: bool) -> None:
        source = self.source
        status = {
            "lag": source.lag(),
            "assigned": source.assigned(),
            "connected": connected or source.connected(),
            "revoked": revoked,
        } | {k: getattr(source, k) for k in _COUNTERS}
        self.out.send((kind, payload, status, self.logs.take()))


def _plain(record: RawRecord) -> Record:
    return Record(record.topic, record.partition, record.offset, record.value, record.key)


if __name__ == "__main__":
    main(sys.argv[1:])
