"""An asyncio server run in a thread of its own, with its own event loop.

The NDJSON socket and OIP/gRPC both serve from such a thread: :meth:`start` waits until the
server listens (or raises why it could not), :meth:`stop` stops the loop and joins the thread.
A subclass opens its server in :meth:`_open` and closes it in :meth:`_close`, both on the loop.
"""

from __future__ import annotations

import asyncio
import threading


class LoopThread:
    #: Errors of :meth:`_open` that mean "could not start" (raised again by :meth:`start`).
    start_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, name: str, what: str):
        self._name = name
        self._what = what  # for the start timeout's message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"{self._what} did not start in time")
        if self._error is not None:
            raise self._error

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._error is not None:  # the start failed: the loop thread closes its loop itself
            self._thread.join(timeout_s)
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        self._stopped()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except self.start_errors as e:
            self._error = e
        self._ready.set()
        if self._error is None:
            loop.run_forever()
        self._close(loop)  # also after a failed start: close what was opened before it failed
        loop.close()

    async def _open(self) -> None:
        raise NotImplementedError

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        """After the loop stopped (or :meth:`_open` failed), on its thread: close what
        :meth:`_open` opened."""

    def _stopped(self) -> None:
        """After :meth:`stop` joined the thread, on the caller's thread."""
