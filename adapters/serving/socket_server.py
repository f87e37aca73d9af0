"""The prediction server: newline-delimited JSON over TCP and a Unix socket.

One request per line, one answer per line, in order (requests may be pipelined). A line longer
than ``serving.max_request_bytes`` is refused before it is buffered whole, and the connection
closed; a malformed request gets an error answer and the connection carries on. When a token is
configured, every request must carry ``"token"``; it is compared in constant time and never
logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from learnd.adapters.bind_errors import bind_error
from learnd.daemon.config import ServingConfig
from learnd.daemon.errors import StartupError
from learnd.daemon.serving.requests import OPS, RequestHandler

log = logging.getLogger("learnd.serving")

Observer = Callable[[str, str, float], None]  # (op, outcome, seconds)


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


class PredictionServer:
    def __init__(
        self,
        handler: RequestHandler,
        cfg: ServingConfig,
        observe: Observer | None = None,
        sockets: Sequence[socket.socket] = (),
    ):
        """``sockets``: listening sockets bound elsewhere (a serving process gets them from the
        daemon, which binds them once for all its serving processes); none: bind from ``cfg``."""
        self.handler = handler
        self._sockets = tuple(sockets)
        self._own_sockets = False
        self.cfg = cfg
        self.observe = observe or (lambda op, outcome, s: None)
        self._token = cfg.token.get_secret_value().encode() if cfg.token else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._last_seen: dict[_Connection, float] = {}
        self._reaper: asyncio.Task | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.unix_path: Path | None = None
        self.connections = 0
        self.refused_connections = 0
        self.evicted_connections = 0

    # ---- lifecycle (called from other threads) ----
    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="learnd-serving", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("prediction server did not start in time")
        if self._error is not None:
            raise self._error

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if self.unix_path is not None and self._own_sockets:  # the binder removes its own
            self.unix_path.unlink(missing_ok=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except (OSError, StartupError) as e:
            self._error = e
        self._ready.set()
        if self._error is None:
            loop.run_forever()
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
        loop.close()

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

    def _answer_lines(self, lines: list[bytes]) -> bytes:
        """Answers to the complete request lines of one read, in order, as one buffer.

        Each request's latency is observed as the time to answer the whole read it came in:
        what a pipelining client waits."""
        t0 = time.perf_counter()
        answers: list[bytes] = [b""] * len(lines)
        outcomes: list[tuple[str, str]] = [("unknown", "ok")] * len(lines)
        reqs: list[Any] = []
        where: list[int] = []
        for i, line in enumerate(lines):
            try:
                req = orjson.loads(line)
            except orjson.JSONDecodeError:
                answers[i], outcomes[i] = _BAD_JSON, ("unknown", "bad_request")
                continue
            op = req.get("op", "predict") if isinstance(req, dict) else "unknown"
            op = op if op in OPS else "unknown"
            if self._token is not None:
                given = req.pop("token", None) if isinstance(req, dict) else None
                given_b = given.encode() if isinstance(given, str) else b""
                if not hmac.compare_digest(given_b, self._token):
                    answers[i], outcomes[i] = _UNAUTHORIZED, (op, "unauthorized")
                    continue
            outcomes[i] = (op, "ok")
            reqs.append(req)
            where.append(i)
        for i, answer in zip(where, self.handler.handle_many(reqs), strict=True):
            answers[i] = _dumps(answer)
            if not answer.get("ok"):
                outcomes[i] = (outcomes[i][0], str(answer.get("error", "error")))
        elapsed = time.perf_counter() - t0
        for op, outcome in outcomes:
            self.observe(op, outcome, elapsed)
        return b"".join(answers)


_BAD_JSON = _dumps({"ok": False, "error": "bad_request", "detail": "request is not valid JSON"})
_UNAUTHORIZED = _dumps({"ok": False, "error": "unauthorized", "detail": "missing or wrong token"})


class _Connection(asyncio.Protocol):
    """One client. Every complete line that arrives in one read is answered in order and the
    answers go out in one write, so pipelined requests cost one syscall per batch, not per
    request. A partial line is kept until its newline comes, but never beyond the size limit."""

    def __init__(self, server: PredictionServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.limit = server.cfg.max_request_bytes

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
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
        server = self.server
        if self.transport is None or self.transport.is_closing():
            return
        self.buffer += data
        end = self.buffer.rfind(b"\n")
        if end < 0:
            if len(self.buffer) > self.limit:
                self._refuse()
            return
        lines = bytes(self.buffer[: end + 1]).split(b"\n")
        del self.buffer[: end + 1]
        todo = []
        too_large = False
        for line in lines[:-1]:
            if len(line) > self.limit:
                too_large = True
                break
            if line.strip():
                todo.append(line)
        server._last_seen[self] = time.monotonic()
        if todo:
            self.transport.write(server._answer_lines(todo))
        if too_large:
            self.transport.write(server._too_large())
            self.transport.close()
            return
        if len(self.buffer) > self.limit:
            self._refuse()

    def _refuse(self) -> None:
        assert self.transport is not None
        self.buffer.clear()
        self.transport.write(self.server._too_large())
        self.transport.close()

    def pause_writing(self) -> None:  # the peer stopped reading: stop reading its requests
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._last_seen.pop(self, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
