"""Runs :class:`learnd.adapters.serving.oip_http.OipHttpApp` under uvicorn (httptools parser) in a
thread with its own event loop, on a listening socket bound by the daemon and shared by every
serving process (like the NDJSON socket).

uvicorn brings keep-alive and pipelining; the limits the NDJSON socket keeps are added where
uvicorn has none, in a small subclass of its protocol: request heads over
``serving.max_request_bytes`` close the connection; a connection that sends nothing for
``serving.idle_timeout_s`` is closed (uvicorn's own timer covers only the time between two
requests); at ``serving.max_connections`` a new connection replaces the one idle longest if that
one has been idle ``serving.evict_idle_after_s``, and is otherwise answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from learnd.adapters.serving.oip_http import OipHttpApp
from learnd.daemon.config import ServingConfig

log = logging.getLogger("learnd.serving")

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def bind_http(cfg: ServingConfig) -> socket.socket:
    """The OIP/HTTP listening socket (``serving.tcp_host``, ``serving.oip_http_port``)."""
    sock = socket.create_server((cfg.tcp_host, cfg.oip_http_port or 0), backlog=1024)
    sock.setblocking(False)
    return sock


def _guarded(cfg: ServingConfig) -> type[HttpToolsProtocol]:
    last_seen: dict[HttpToolsProtocol, float] = {}

    class Guarded(HttpToolsProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            self._head = 0
            self._admitted = False
            if len(last_seen) >= cfg.max_connections and not _evict_idlest():
                body = b'{"error": "at most %d connections"}' % cfg.max_connections
                transport.write(_BUSY % (len(body), body))
                transport.close()
                self.transport = transport
                return
            last_seen[self] = time.monotonic()
            self._admitted = True
            sock = transport.get_extra_info("socket")
            if sock is not None:  # asyncio sets it only on sockets made with proto IPPROTO_TCP
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)
            self._idle = self.loop.call_later(cfg.idle_timeout_s, self._reap)

        def _reap(self) -> None:
            if time.monotonic() - last_seen.get(self, 0.0) >= cfg.idle_timeout_s:
                self.transport.close()
            elif not self.transport.is_closing():
                self._idle = self.loop.call_later(cfg.idle_timeout_s, self._reap)

        def data_received(self, data: bytes) -> None:
            if self not in last_seen:
                return  # refused at the cap, closing
            last_seen[self] = time.monotonic()
            if self.cycle is None or self.cycle.response_complete:
                self._head += len(data)  # bytes of a request head not yet complete
                if self._head > cfg.max_request_bytes:
                    self.transport.close()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._head = 0
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            if not self._admitted:
                return  # refused at the cap: uvicorn never saw it
            last_seen.pop(self, None)
            self._idle.cancel()
            super().connection_lost(exc)

    def _evict_idlest() -> bool:
        idlest = min(last_seen, key=last_seen.__getitem__)
        busy = idlest.cycle is not None and not idlest.cycle.response_complete
        if busy or time.monotonic() - last_seen[idlest] < cfg.evict_idle_after_s:
            return False
        last_seen.pop(idlest)
        idlest.transport.close()
        return True

    return Guarded


class OipHttpServer:
    """uvicorn in a thread: :meth:`start` returns once it listens, :meth:`stop` ends it."""

    def __init__(self, app: OipHttpApp, cfg: ServingConfig, sock: socket.socket):
        self.sock = sock
        self.address = sock.getsockname()[:2]
        config = uvicorn.Config(
            app,
            http=_guarded(cfg),
            loop="asyncio",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=int(max(1, cfg.idle_timeout_s)),
            server_header=False,
            date_header=False,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="learnd-oip-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OIP/HTTP server did not start")
            time.sleep(0.01)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        finally:
            loop.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
