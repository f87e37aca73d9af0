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
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from daemon.config import ServingConfig
from daemon.serving import OPS, RequestHandler

log = logging.getLogger("learnd.serving")

Observer = Callable[[str, str, float], None]  # (op, outcome, seconds)


def _dumps(obj: dict) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class PredictionServer:
    def __init__(
        self, handler: RequestHandler, cfg: ServingConfig, observe: Observer | None = None
    ):
        self.handler = handler
        self.cfg = cfg
        self.observe = observe or (lambda op, outcome, s: None)
        self._token = cfg.token.get_secret_value().encode() if cfg.token else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._last_seen: dict[asyncio.StreamWriter, float] = {}
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
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except OSError as e:
            self._error = e
        self._ready.set()
        if self._error is None:
            loop.run_forever()
        for s in self._servers:
            s.close()
        for w in list(self._last_seen):
            w.close()
        # Closed transports give each handler EOF, so it returns by itself; only stragglers
        # are cancelled (asyncio logs a cancelled connection handler as an error).
        pending = asyncio.all_tasks(loop)
        if pending:
            _, stragglers = loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            for task in stragglers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*stragglers, return_exceptions=True))
        loop.close()

    async def _open(self) -> None:
        limit = self.cfg.max_request_bytes
        if self.cfg.tcp_port is not None:
            srv = await asyncio.start_server(
                self._client, self.cfg.tcp_host, self.cfg.tcp_port, limit=limit, reuse_address=True
            )
            self._servers.append(srv)
            self.tcp_address = srv.sockets[0].getsockname()[:2]
        if self.cfg.unix_path is not None:
            path = Path(self.cfg.unix_path)
            if path.exists():
                if not stat.S_ISSOCK(path.stat().st_mode):
                    raise OSError(f"serving.unix_path {path} exists and is not a socket")
                path.unlink()  # a stale socket from a previous run
            path.parent.mkdir(parents=True, exist_ok=True)
            srv = await asyncio.start_unix_server(self._client, str(path), limit=limit)
            os.chmod(path, 0o660)
            self._servers.append(srv)
            self.unix_path = path

    # ---- one connection ----
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._last_seen) >= self.cfg.max_connections and not self._evict_idlest():
            self.refused_connections += 1
            writer.write(
                _dumps(
                    {
                        "ok": False,
                        "error": "too_many_connections",
                        "detail": f"at most {self.cfg.max_connections} connections",
                    }
                )
            )
            await self._close(writer)
            return
        self._last_seen[writer] = time.monotonic()
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: nothing to answer
        finally:
            self._last_seen.pop(writer, None)
            await self._close(writer)

    def _evict_idlest(self) -> bool:
        """Close the connection idle longest, if idle for ``evict_idle_after_s``."""
        idlest = min(self._last_seen, key=self._last_seen.__getitem__)
        if time.monotonic() - self._last_seen[idlest] < self.cfg.evict_idle_after_s:
            return False
        self._last_seen.pop(idlest)
        self.evicted_connections += 1
        idlest.close()
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self.cfg.idle_timeout_s)
            except TimeoutError:
                return
            except (asyncio.LimitOverrunError, ValueError):
                self.observe("unknown", "too_large", 0.0)
                writer.write(
                    _dumps(
                        {
                            "ok": False,
                            "error": "too_large",
                            "detail": f"a request line may hold at most {self.cfg.max_request_bytes} bytes",
                        }
                    )
                )
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            self._last_seen[writer] = time.monotonic()
            writer.write(self._answer(line))
            await writer.drain()  # returns at once unless the peer stopped reading

    def _answer(self, line: bytes) -> bytes:
        t0 = time.perf_counter()
        try:
            req = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.observe("unknown", "bad_request", time.perf_counter() - t0)
            return _dumps(
                {"ok": False, "error": "bad_request", "detail": "request is not valid JSON"}
            )
        op = req.get("op", "predict") if isinstance(req, dict) else "unknown"
        op = op if op in OPS else "unknown"
        if self._token is not None:
            given = req.pop("token", None) if isinstance(req, dict) else None
            given_b = given.encode() if isinstance(given, str) else b""
            if not hmac.compare_digest(given_b, self._token):
                self.observe(op, "unauthorized", time.perf_counter() - t0)
                return _dumps(
                    {"ok": False, "error": "unauthorized", "detail": "missing or wrong token"}
                )
        answer = self.handler.handle(req)
        outcome = "ok" if answer.get("ok") else str(answer.get("error", "error"))
        self.observe(op, outcome, time.perf_counter() - t0)
        return _dumps(answer)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            pass  # already reset by the peer
