"""The anchor for bench/serving.py: a plain asyncio + numpy NDJSON server of the same model
shape, what a user could write in an afternoon (bench/request_path.py's ``PlainServer`` per
line, one asyncio stream per connection, one process, numpy's BLAS on one thread as learnd's
serving processes run).

    .venv/bin/python bench/_plain_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from request_path import PlainServer, weights  # noqa: E402

from learnd.adapters.cpu_threads import limit_blas_threads  # noqa: E402


async def serve(port: int) -> None:
    plain = PlainServer(weights(), 1)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(plain.line(line))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    limit_blas_threads(1)
    asyncio.run(serve(int(sys.argv[1])))
