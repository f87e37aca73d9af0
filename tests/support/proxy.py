"""A TCP proxy that can simulate a network outage (where tc/netem is not available)."""

from __future__ import annotations

import asyncio
import threading


class OutageProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``. ``cut()`` resets every connection
    and refuses new ones until ``restore()``."""

    def __init__(self, port: int, target: int):
        self.port, self.target = port, target
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> OutageProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self):
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, reuse_address=True
        )

    async def _client(self, reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_w}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass  # one side went away: close both below
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._writers -= {writer, up_w}

    async def _cut(self):
        self._server.close()
        # Abort before waiting: from Python 3.12 wait_closed() also waits for the connections.
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
