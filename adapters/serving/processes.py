"""Serving from separate processes, so that learning and serving never wait on one GIL.

With ``serving.processes: N`` (N >= 1) the daemon binds the listening sockets once and starts N
serving processes that all accept on them. Each runs the ordinary
:class:`learnd.adapters.serving.socket_server.PredictionServer` and :class:`learnd.daemon.serving.requests.RequestHandler` over
its own :class:`learnd.daemon.serving.snapshot.SnapshotRef`, kept current by a
:class:`learnd.adapters.serving.shared_snapshots.SnapshotMirror`. Health answers come from the daemon through
shared memory; the operations that change serving (``rollback``, ``unpin``) and ``versions`` and ``export``
are forwarded to the daemon over a pipe and answered by its own handler, so there is one
authority over what is served. Request metrics are kept per process and summed into the daemon's
``/metrics``. A serving process that dies is restarted; the sockets stay open meanwhile, so
clients queue in the backlog rather than being refused.

Measured on 2 cores (bench/serving.py, README): with the learner at full speed, a single
client's p99 drops from a few milliseconds (one process: requests wait for the learner to yield
the GIL) to well under one.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from learnd.adapters.child_process import die_with_parent
from learnd.adapters.cpu_threads import limit_blas_threads
from learnd.adapters.serving.oip_serving import OipListeners, start_oip
from learnd.adapters.serving.segments import remove_stale_segments, segment_scope
from learnd.adapters.serving.shared_snapshots import SeqBlock, SnapshotChannel
from learnd.adapters.serving.socket_server import bind_sockets
from learnd.daemon.config import LearndConfig
from learnd.daemon.serving.requests import CONTROL_OPS, RequestHandler
from learnd.daemon.serving.snapshot import SnapshotRef

log = logging.getLogger("learnd.serving")

FORWARDED = CONTROL_OPS
STATS_BYTES = 256 * 1024
# How the daemon stops a serving process. Not SIGTERM: a stop meant for the daemon often reaches
# its whole process group, and the serving processes ignore it, to answer until the daemon has
# checkpointed and stops them (adapters/child_process.py).
STOP_SIGNAL = signal.SIGUSR2


class ServingProcesses:
    """The daemon's side: binds, starts, watches and stops the serving processes."""

    def __init__(
        self,
        cfg: LearndConfig,
        ref: SnapshotRef,
        admin: RequestHandler,
        health: Callable[[], Mapping[str, Any]],
    ):
        self.cfg = cfg
        self.admin = admin
        self.health = health
        # segments a killed predecessor on the same state left behind go first
        self.scope = segment_scope(cfg.checkpoint)
        remove_stale_segments(self.scope)
        self.channel = SnapshotChannel(ref, self.scope, keep=max(8, cfg.serving.keep_versions))
        self.sockets: tuple[socket.socket, ...] = ()
        self.tcp_address: tuple[str, int] | None = None
        self.unix_path: Path | None = None
        self.oip = OipListeners(cfg.serving)  # Open Inference Protocol (HTTP, gRPC) listeners
        self.restarts = 0
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = []
        self._pipes: list[Connection] = []
        self._stats: list[SeqBlock] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        self.sockets = bind_sockets(self.cfg.serving)
        for sock in self.sockets:
            if sock.family == socket.AF_UNIX:
                self.unix_path = Path(sock.getsockname())
            else:
                self.tcp_address = sock.getsockname()[:2]
        self.oip.bind()
        self.channel.set_health(dict(self.health()))
        for i in range(self.cfg.serving.processes):
            self._stats.append(SeqBlock.create(self.scope, STATS_BYTES))
            self._procs.append(None)
            self._pipes.append(None)  # type: ignore[arg-type]
            self._spawn(i)
        self.oip.wait_listening(timeout_s)
        self._thread = threading.Thread(target=self._watch, name="learnd-serving-sup", daemon=True)
        self._thread.start()

    def _spawn(self, i: int) -> None:
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=worker_main,
            name=f"learnd-serving-{i}",
            args=(
                self.cfg,
                self.sockets,
                *self.channel.names,
                self._stats[i].name,
                theirs,
                os.getpid(),
            ),
            kwargs={"oip": self.oip.sockets},
            daemon=True,
        )
        proc.start()
        theirs.close()
        self._procs[i], self._pipes[i] = proc, ours

    def _watch(self) -> None:
        """Refresh the shared health answer, answer forwarded requests, restart the dead."""
        last_health = 0.0
        while not self._stop.is_set():
            ready = wait([p for p in self._pipes if p is not None], timeout=0.1)
            for conn in ready:
                try:
                    req = conn.recv()
                except (EOFError, OSError):
                    continue
                try:
                    conn.send(self.admin.handle(req))
                except (BrokenPipeError, OSError):
                    pass
            now = time.monotonic()
            if now - last_health >= 0.2:
                self.channel.set_health(dict(self.health()))
                last_health = now
            for i, proc in enumerate(self._procs):
                if proc is not None and not proc.is_alive() and not self._stop.is_set():
                    log.error(
                        "serving process %d exited with %s; restarting it",
                        i,
                        proc.exitcode,
                        extra={"event": "serving_restart", "exitcode": proc.exitcode},
                    )
                    self.restarts += 1
                    self._pipes[i].close()
                    self._spawn(i)

    def stats(self) -> list[str]:
        """Each serving process's last exposition of its request metrics."""
        out = []
        for block in self._stats:
            try:
                _, payload = block.read()
            except TimeoutError:
                continue
            if payload:
                out.append(payload.decode())
        return out

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for proc in self._procs:
            if proc is not None and proc.is_alive() and proc.pid is not None:
                try:
                    os.kill(proc.pid, STOP_SIGNAL)
                except ProcessLookupError:
                    pass
        for proc in self._procs:
            if proc is not None:
                proc.join(timeout_s)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout_s)
        for sock in self.sockets:
            sock.close()
        self.oip.close()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)
        for block in self._stats:
            block.close()
        self.channel.close()


class SummedServingCollector(Collector):
    """Yields the serving processes' request metrics, summed, as the daemon's own."""

    def __init__(self, processes: ServingProcesses):
        self.processes = processes

    def collect(self):
        families: dict[str, Any] = {}
        for text in self.processes.stats():
            for fam in text_string_to_metric_families(text):
                if not fam.name.startswith("learnd_") or fam.name.endswith("_created"):
                    continue  # creation times of per-process series do not add up
                into = families.setdefault(fam.name, (fam, {}))
                for sample in fam.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    into[1][key] = into[1].get(key, 0.0) + sample.value
        for fam, values in families.values():
            fam.samples = [
                Sample(name, dict(labels), value)
                for (name, labels), value in values.items()
                if not name.endswith("_created")
            ]
            yield fam


def worker_main(
    cfg: LearndConfig, sockets, control: str, health: str, stats: str, pipe, parent: int, oip=None
) -> None:
    """A serving process: answers requests from the mirrored snapshot until the daemon sends
    :data:`STOP_SIGNAL`, or until it (pid ``parent``) is gone."""
    die_with_parent(parent)
    limit_blas_threads(1)  # parallelism comes from the processes (adapters/cpu_threads.py)
    from learnd.adapters.serving.metrics import ServingMetrics
    from learnd.adapters.serving.prediction_log import PredictionLogger, with_prediction_log
    from learnd.adapters.serving.shared_snapshots import SnapshotMirror
    from learnd.adapters.serving.socket_server import PredictionServer

    stopped = threading.Event()
    signal.signal(STOP_SIGNAL, lambda *_: stopped.set())
    ref = SnapshotRef(keep=cfg.serving.keep_versions, spacing_s=cfg.serving.keep_spacing_s)
    mirror = SnapshotMirror(control, health, ref)
    mirror.refresh()
    registry = CollectorRegistry(auto_describe=True)
    metrics = ServingMetrics(registry)
    registry.register(_MirrorCollector(mirror))
    inner = RequestHandler(
        ref,
        cfg.schema_,
        cfg.serving.max_batch,
        health=mirror.health,
        allow_rollback=cfg.serving.allow_rollback,
    )
    handler = with_prediction_log(_MirroredHandler(inner, mirror, pipe), cfg, registry)
    server = PredictionServer(handler, cfg.serving, metrics.observe, sockets=sockets)  # type: ignore[arg-type]
    server.start()
    oip_servers = start_oip(cfg, oip, ref, mirror, registry)
    out = SeqBlock.attach(stats, writable=True)
    try:
        while not stopped.wait(0.5):
            if os.getppid() != parent:  # the daemon died (even by SIGKILL): free the sockets
                break
            mirror.refresh()  # stay current between requests too
            out.write(generate_latest(registry))
    finally:
        out.write(generate_latest(registry))
        for oip_server in oip_servers:
            oip_server.stop()
        server.stop()
        if isinstance(handler, PredictionLogger):
            handler.stop()
        mirror.close()


class _MirrorCollector(Collector):
    def __init__(self, mirror):
        self.mirror = mirror

    def collect(self):
        family = CounterMetricFamily(
            "learnd_serving_snapshots",
            "Published snapshots a serving process loaded, or refused as unreadable or malformed.",
            labels=["outcome"],
        )
        family.add_metric(["loaded"], self.mirror.loads)
        family.add_metric(["rejected"], self.mirror.rejected)
        yield family


class _MirroredHandler:
    """A serving process's handler: refreshes the mirror before each request and forwards the
    operations that belong to the daemon."""

    def __init__(self, inner: RequestHandler, mirror, pipe: Connection):
        self.inner = inner
        self.mirror = mirror
        self.pipe = pipe
        self._lock = threading.Lock()

    def handle(self, req: Any) -> dict:
        if isinstance(req, dict) and req.get("op") in FORWARDED:
            with self._lock:
                try:
                    self.pipe.send(req)
                    if self.pipe.poll(10):
                        answer = self.pipe.recv()
                        self.mirror.refresh()  # a rollback is served here before we answer
                        return answer
                except (EOFError, OSError):
                    pass
            return {"ok": False, "error": "unavailable", "detail": "the daemon did not answer"}
        self.mirror.refresh()
        return self.inner.handle(req)

    def handle_many(self, reqs, single=None) -> list[dict]:
        self.mirror.refresh()
        return self.inner.handle_many(reqs, single=self.handle)
