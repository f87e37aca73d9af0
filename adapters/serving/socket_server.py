"""The prediction server: newline-delimited JSON over TCP and a Unix socket.

One request per line, one answer per line, in order (requests may be pipelined). A line longer
than ``serving.max_request_bytes`` is refused before it is buffered whole, and the connection
closed; a malformed request gets an error answer and the connection carries on. When a token is
configured, every request must carry ``"token"``; it is compared in constant time and never
logged.

Fairness: connections are served in turns (at most :data:`TURN_REQUESTS` requests or
:data:`TURN_BYTES` bytes of them per turn), and control operations run on a thread of their own,
one at a time, first come first served, each connection waiting for its answer before its next
request. So one connection pipelining thousands of requests delays another's prediction by at
most one turn of it, one flooding control operations delays it not at all, and one that stops
reading its answers is simply not read any further.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from learnd.adapters.bind_errors import bind_error
from learnd.adapters.serving.loop_thread import LoopThread
from learnd.daemon.config import ServingConfig
from learnd.daemon.errors import StartupError
from learnd.daemon.serving.requests import CONTROL_OPS, OPS, RequestHandler

log = logging.getLogger("learnd.serving")

Observer = Callable[[str, str, float], None]  # (op, outcome, seconds)

# One connection's turn on the event loop: at most this many requests, or this many bytes of
# them (but at least one request), before every other connection with work gets its turn.
TURN_REQUESTS = 64
TURN_BYTES = 16 * 1024
# Consecutive control operations of one connection run on the control thread together, at most
# this many: another connection's control operation waits for at most one such run.
TURN_CONTROL = 32
# Requests queued on one connection beyond which it is not read until its queue drains.
QUEUE_BYTES = 1 << 20
# Answers buffered for a connection beyond which it counts as not reading them: answering
# (and reading) it stops until they drain.
WRITE_BUFFER_BYTES = 256 * 1024


def _dumps(obj: dict) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def bind_sockets(cfg: ServingConfig) -> tuple[socket.socket, ...]:
    """The listening sockets ``cfg`` asks for: TCP and/or a Unix socket (mode 0660, replacing a
    stale socket file, refusing to replace anything else or a socket a live daemon listens on).
    A failure is a :class:`StartupError` naming the config field."""
    out = []
    try:
        if cfg.tcp_port is not None:
            try:
                tcp = socket.create_server((cfg.tcp_host, cfg.tcp_port), backlog=1024)
            except OSError as e:
                raise bind_error("serving.tcp_port", cfg.tcp_host, cfg.tcp_port, e) from None
            tcp.setblocking(False)
            out.append(tcp)
        if cfg.unix_path is not None:
            out.append(_bind_unix(Path(cfg.unix_path)))
    except (OSError, StartupError):
        for sock in out:
            sock.close()
        raise
    return tuple(out)


def _bind_unix(path: Path) -> socket.socket:
    if path.exists():
        if not stat.S_ISSOCK(path.stat().st_mode):
            raise StartupError(f"serving.unix_path: {path} exists and is not a socket")
        if _listened_on(path):
            raise StartupError(
                f"serving.unix_path: {path} is in use by a running daemon: stop it or choose "
                "another path (serving.unix_path, LEARND_SERVING__UNIX_PATH)"
            )
        path.unlink()  # a stale socket from a previous run
    path.parent.mkdir(parents=True, exist_ok=True)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        unix.bind(str(path))
        os.chmod(path, 0o660)
        unix.listen(1024)
    except OSError as e:
        unix.close()
        raise StartupError(
            f"serving.unix_path: cannot listen on {path}: {e.strerror or e}"
        ) from None
    unix.setblocking(False)
    return unix


def _listened_on(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:  # refused: nobody listens; the file is left over
            return False
    return True


class PredictionServer(LoopThread):
    start_errors = (OSError, StartupError)

    def __init__(
        self,
        handler: RequestHandler,
        cfg: ServingConfig,
        observe: Observer | None = None,
        sockets: Sequence[socket.socket] = (),
    ):
        """``sockets``: listening sockets bound elsewhere (a serving process gets them from the
        daemon, which binds them once for all its serving processes); none: bind from ``cfg``."""
        super().__init__("learnd-serving", "prediction server")
        self.handler = handler
        self._sockets = tuple(sockets)
        self._own_sockets = False
        self.cfg = cfg
        self.observe = observe or (lambda op, outcome, s: None)
        # A configured token is always checked (config refuses an empty or blank one).
        self._token = cfg.token.get_secret_value().encode() if cfg.token is not None else None
        self._control_pool = concurrent.futures.ThreadPoolExecutor(1, "learnd-control")
        self._servers: list[asyncio.base_events.Server] = []
        self._last_seen: dict[_Connection, float] = {}
        self._reaper: asyncio.Task | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.unix_path: Path | None = None
        self.connections = 0
        self.refused_connections = 0
        self.evicted_connections = 0

    # ---- lifecycle (start and stop: LoopThread, called from other threads) ----
    def _stopped(self) -> None:
        if self.unix_path is not None and self._own_sockets:  # the binder removes its own
            self.unix_path.unlink(missing_ok=True)

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        for s in self._servers:
            s.close()
        for conn in list(self._last_seen):
            conn.close()
        if self._reaper is not None:
            self._reaper.cancel()
        loop.run_until_complete(asyncio.sleep(0))  # let the closed transports finish
        pending = asyncio.all_tasks(loop)
        if pending:
            _, stragglers = loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            for task in stragglers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*stragglers, return_exceptions=True))
        self._control_pool.shutdown(wait=False, cancel_futures=True)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._sockets:
            self._sockets = bind_sockets(self.cfg)
            self._own_sockets = True
        for sock in self._sockets:
            if sock.family == socket.AF_UNIX:
                srv = await loop.create_unix_server(lambda: _Connection(self), sock=sock)
                self.unix_path = Path(sock.getsockname())
            else:
                srv = await loop.create_server(lambda: _Connection(self), sock=sock)
                self.tcp_address = sock.getsockname()[:2]
            self._servers.append(srv)
        self._reaper = loop.create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        """Close connections idle for ``idle_timeout_s`` (one timer for all of them, rather
        than one per request)."""
        period = min(1.0, self.cfg.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.cfg.idle_timeout_s
            for conn, seen in list(self._last_seen.items()):
                if seen < cutoff:
                    conn.close()

    # ---- connections ----
    def _admit(self, conn: _Connection) -> bool:
        if len(self._last_seen) >= self.cfg.max_connections and not self._evict_idlest():
            self.refused_connections += 1
            return False
        self._last_seen[conn] = time.monotonic()
        self.connections += 1
        return True

    def _evict_idlest(self) -> bool:
        """Close the connection idle longest, if idle for ``evict_idle_after_s``."""
        idlest = min(self._last_seen, key=self._last_seen.__getitem__)
        if time.monotonic() - self._last_seen[idlest] < self.cfg.evict_idle_after_s:
            return False
        self._last_seen.pop(idlest)
        self.evicted_connections += 1
        idlest.close()
        return True

    def _too_large(self) -> bytes:
        self.observe("unknown", "too_large", 0.0)
        return _dumps(
            {
                "ok": False,
                "error": "too_large",
                "detail": f"a request line may hold at most {self.cfg.max_request_bytes} bytes",
            }
        )

    def _prepare(self, line: bytes) -> tuple[str, Any, bytes | None]:
        """(op, request, None), or (op, None, the answer) for a request answered without the
        handler: not JSON, or a missing or wrong token."""
        try:
            req = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.observe("unknown", "bad_request", 0.0)
            return "unknown", None, _BAD_JSON
        op = req.get("op", "predict") if isinstance(req, dict) else "unknown"
        op = op if op in OPS else "unknown"
        if self._token is not None:
            given = req.pop("token", None) if isinstance(req, dict) else None
            given_b = given.encode() if isinstance(given, str) else b""
            if not hmac.compare_digest(given_b, self._token):
                self.observe(op, "unauthorized", 0.0)
                return op, None, _UNAUTHORIZED
        return op, req, None

    def _answer(self, prepared: list[tuple[str, Any, bytes | None]]) -> bytes:
        """Answers to prepared requests, in order, as one buffer (runs of predictions share
        one forward pass). Each request's latency is observed as the time to answer the whole
        run it came in: what a pipelining client waits."""
        t0 = time.perf_counter()
        reqs = [req for _, req, done in prepared if done is None]
        answers = iter(self.handler.handle_many(reqs))
        out: list[bytes] = []
        outcomes: list[tuple[str, str]] = []
        for op, _, done in prepared:
            if done is not None:
                out.append(done)
                continue
            answer = next(answers)
            out.append(_dumps(answer))
            outcomes.append((op, "ok" if answer.get("ok") else str(answer.get("error", "error"))))
        elapsed = time.perf_counter() - t0
        for op, outcome in outcomes:
            self.observe(op, outcome, elapsed)
        return b"".join(out)

    def _control(self, ops: list[tuple[str, Any]], done: Callable[[bytes], None]) -> None:
        """Run a connection's consecutive control operations (at most :data:`TURN_CONTROL`) on
        the control thread, off the event loop, in order; ``done`` gets their answers on the
        loop. One thread for all connections, first come first served, and a connection waits
        for its answers before its next requests: a connection flooding control operations
        holds up no other connection's predictions, and another connection's control
        operation waits for at most one such run of it."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        future = loop.run_in_executor(self._control_pool, self._run_control, ops)

        def finished(f: asyncio.Future) -> None:
            if f.cancelled():
                return
            elapsed = time.perf_counter() - t0
            answers = f.result()
            for (op, _), answer in zip(ops, answers, strict=True):
                outcome = "ok" if answer.get("ok") else str(answer.get("error", "error"))
                self.observe(op, outcome, elapsed)
            done(b"".join(_dumps(a) for a in answers))

        future.add_done_callback(finished)

    def _run_control(self, ops: list[tuple[str, Any]]) -> list[dict]:
        answers = []
        for op, req in ops:
            try:
                answers.append(self.handler.handle(req))
            except Exception as e:  # noqa: BLE001 - answered and logged, the server carries on
                log.error(
                    "control operation %s failed: %s: %s",
                    op,
                    type(e).__name__,
                    e,
                    extra={"event": "control_failed"},
                )
                answers.append({"ok": False, "error": "internal", "detail": type(e).__name__})
        return answers


_BAD_JSON = _dumps({"ok": False, "error": "bad_request", "detail": "request is not valid JSON"})
_UNAUTHORIZED = _dumps({"ok": False, "error": "unauthorized", "detail": "missing or wrong token"})


class _Connection(asyncio.Protocol):
    """One client, served in turns so that no client can hold up another.

    Complete request lines are queued as they arrive; each turn answers at most
    :data:`TURN_REQUESTS` requests or :data:`TURN_BYTES` bytes of them (at least one request)
    with one write, then yields to the event loop, so every other connection with work gets its
    turn before this one's next. A control operation (``versions``, ``rollback``, ``unpin``)
    ends a turn and runs off the loop with the ones right after it, at most
    :data:`TURN_CONTROL` (:meth:`PredictionServer._control`); the connection's later requests
    wait for their answers, so answers stay in request order. Reading stops while
    :data:`QUEUE_BYTES` of requests are queued or while the client is not reading its answers
    (the transport's write buffer is full): a client pipelining without reading holds only
    that much of the server's memory and none of its time. A line longer than the size limit
    is answered ``too_large`` in its turn, and the connection closed."""

    def __init__(self, server: PredictionServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.limit = server.cfg.max_request_bytes
        self.queue: deque[bytes | None] = deque()  # None: a line over the limit, then close
        self.queued_bytes = 0
        self.turn_due = False  # a turn is scheduled on the loop
        self.in_control = False  # a control operation of this connection is running
        self.write_paused = False
        self.refused = False  # a line over the limit was read: read no more
        self.carried: tuple[str, Any, bytes | None] | None = None  # read after a control run

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        if not self.server._admit(self):
            transport.write(
                _dumps(
                    {
                        "ok": False,
                        "error": "too_many_connections",
                        "detail": f"at most {self.server.cfg.max_connections} connections",
                    }
                )
            )
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing() or self.refused:
            return
        self.server._last_seen[self] = time.monotonic()
        self.buffer += data
        end = self.buffer.rfind(b"\n")
        if end >= 0:
            lines = bytes(self.buffer[: end + 1]).split(b"\n")
            del self.buffer[: end + 1]
            for line in lines[:-1]:
                if len(line) > self.limit:
                    self._refuse()
                    break
                if line.strip():
                    self.queue.append(line)
                    self.queued_bytes += len(line)
        if not self.refused and len(self.buffer) > self.limit:
            self._refuse()
        self._flow()
        if not self.turn_due:
            self._turn()

    def _refuse(self) -> None:
        self.buffer.clear()
        self.queue.append(None)
        self.refused = True

    def _turn(self) -> None:
        """Answer the next requests in the queue, at most one turn's worth."""
        self.turn_due = False
        transport = self.transport
        if transport is None or transport.is_closing():
            self.queue.clear()
            return
        if self.in_control or self.write_paused:
            return  # resumed by the control answer or by resume_writing
        server = self.server
        prepared: list[tuple[str, Any, bytes | None]] = []
        if self.carried is not None:
            prepared.append(self.carried)
            self.carried = None
        size = 0
        control: list[tuple[str, Any]] = []
        while self.queue and len(prepared) < TURN_REQUESTS and (size < TURN_BYTES or not prepared):
            item = self._next()
            if item is None:
                break
            size += item[3]
            op, req, done, _ = item
            if done is None and op in CONTROL_OPS:
                control.append((op, req))
                break
            prepared.append((op, req, done))
        while control and self.queue and len(control) < TURN_CONTROL:  # a run of them
            item = self._next()
            if item is None:
                break
            op, req, done, _ = item
            if done is not None or op not in CONTROL_OPS:
                self.carried = (op, req, done)  # answered first in the turn after the run
                break
            control.append((op, req))
        if prepared:
            transport.write(server._answer(prepared))
        if control:
            self.in_control = True
            server._control(control, self._control_done)
        elif self.queue and self.queue[0] is None:
            transport.write(server._too_large())
            transport.close()
            self.queue.clear()
            return
        self._flow()
        self._schedule()

    def _next(self) -> tuple[str, Any, bytes | None, int] | None:
        """The next queued request, prepared, and its size; None at a line over the limit."""
        line = self.queue[0]
        if line is None:
            return None
        self.queue.popleft()
        self.queued_bytes -= len(line)
        return (*self.server._prepare(line), len(line))

    def _control_done(self, answer: bytes) -> None:
        self.in_control = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
        self._schedule()

    def _schedule(self) -> None:
        work = self.queue or self.carried is not None
        if work and not self.turn_due and not self.in_control and not self.write_paused:
            self.turn_due = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _flow(self) -> None:
        """Read while there is room in the queue and the client reads its answers."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        wanted = not self.write_paused and not self.refused and self.queued_bytes < QUEUE_BYTES
        if wanted and not transport.is_reading():
            transport.resume_reading()
        elif not wanted and transport.is_reading():
            transport.pause_reading()

    def pause_writing(self) -> None:  # the peer stopped reading: stop answering and reading
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flow()
        self._schedule()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._last_seen.pop(self, None)
        self.queue.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
