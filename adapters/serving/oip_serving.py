"""Open Inference Protocol listeners of the serving processes.

The daemon binds them once (:class:`OipListeners`), like the NDJSON socket: the HTTP socket is
handed to every serving process, which accepts on it; the gRPC port is held by a bound
SO_REUSEPORT socket, and every serving process's gRPC server listens on that same port (grpcio
cannot serve an inherited socket; the kernel spreads connections across the listeners). Each
serving process answers from its own mirrored snapshot reference (:func:`start_oip`), so OIP
answers come from the same snapshots and with the same guarantees as the NDJSON ones.

uvicorn and grpcio are imported only when a port is configured (the ``oip`` extra).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from learnd.daemon.config import LearndConfig, ServingConfig
from learnd.daemon.serving.oip import OipModel
from learnd.daemon.serving.snapshot import SnapshotRef


@dataclass(frozen=True)
class OipSockets:
    """What a serving process needs: the shared HTTP socket and the gRPC port."""

    http: socket.socket | None
    grpc_port: int | None


class OipListeners:
    """The daemon's side: binds the OIP HTTP socket and reserves the gRPC port."""

    def __init__(self, cfg: ServingConfig):
        self.cfg = cfg
        self._http: socket.socket | None = None
        self._grpc: socket.socket | None = None

    def bind(self) -> OipSockets:
        try:
            if self.cfg.oip_http_port is not None:
                from learnd.adapters.serving.oip_http_server import bind_http

                self._http = bind_http(self.cfg)
            if self.cfg.oip_grpc_port is not None:
                from learnd.adapters.serving.oip_grpc import reserve_port

                self._grpc = reserve_port(self.cfg)
        except OSError:
            self.close()
            raise
        return self.sockets

    @property
    def sockets(self) -> OipSockets:
        port = self._grpc.getsockname()[1] if self._grpc is not None else None
        return OipSockets(self._http, port)

    @property
    def http_address(self) -> tuple[str, int] | None:
        return self._http.getsockname()[:2] if self._http is not None else None

    @property
    def grpc_address(self) -> tuple[str, int] | None:
        return self._grpc.getsockname()[:2] if self._grpc is not None else None

    def wait_listening(self, timeout_s: float) -> None:
        """Return once a serving process listens on the gRPC port (the HTTP socket is listening
        from :meth:`bind` on: clients wait in its backlog; the gRPC port refuses connections
        until a serving process has started its server on it)."""
        address = self.grpc_address
        if address is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(address, timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no serving process listens on the OIP/gRPC port {address[1]}"
                    ) from None
                time.sleep(0.05)

    def close(self) -> None:
        for sock in (self._http, self._grpc):
            if sock is not None:
                sock.close()


def server_version() -> str:
    try:
        return version("learnd")
    except PackageNotFoundError:
        return "unknown"


def start_oip(
    cfg: LearndConfig, sockets: OipSockets | None, ref: SnapshotRef, mirror: Any, registry=None
) -> list[Any]:
    """Start this serving process's OIP servers over ``ref`` (kept current by ``mirror``), their
    request metrics in ``registry``; returns them, each with a ``stop()``."""
    if sockets is None or (sockets.http is None and sockets.grpc_port is None):
        return []
    from prometheus_client import CollectorRegistry

    from learnd.adapters.serving.oip_metrics import OipMetrics

    metrics = OipMetrics(registry if registry is not None else CollectorRegistry())
    serving = cfg.serving
    model = OipModel(
        ref,
        cfg.schema_,
        serving.model_name,
        serving.max_batch,
        ready=lambda: bool(mirror.health().get("ready")),
        refresh=mirror.refresh,
    )
    token = serving.token.get_secret_value() if serving.token else None
    started: list[Any] = []
    try:
        if sockets.http is not None:
            from learnd.adapters.serving.oip_http import OipHttpApp
            from learnd.adapters.serving.oip_http_server import OipHttpServer

            app = OipHttpApp(
                model,
                token,
                serving.max_request_bytes,
                server_version(),
                metrics.observer("http"),
            )
            started.append(OipHttpServer(app, serving, sockets.http))
            started[-1].start()
        if sockets.grpc_port is not None:
            from learnd.adapters.serving.oip_grpc import OipGrpcServer, OipServicer

            servicer = OipServicer(model, token, server_version(), metrics.observer("grpc"))
            started.append(OipGrpcServer(servicer, serving, sockets.grpc_port))
            started[-1].start()
    except (OSError, RuntimeError):
        for server in started:
            server.stop()
        raise
    return started
