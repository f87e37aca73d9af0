"""Which HTTP stack serves OIP: one keep-alive client's latency against the same minimal infer
handler (parse the OIP JSON, a numpy forward, the OIP JSON answer) on each candidate.

    .venv/bin/python bench/http_stacks.py            # needs the bench extra (aiohttp, starlette)
    .venv/bin/python bench/http_stacks.py --n 5000 --rounds 5

Each stack runs in its own process (one event loop, asyncio); the client is this process, a
prepared request on one keep-alive connection.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time

import numpy as np

BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [5.0, 4.0, 1.0]}]}
).encode()
W = np.ones((3, 1), np.float32)
STACKS = ("aiohttp", "uvicorn-h11", "uvicorn-httptools", "starlette-httptools")


def answer(body: bytes) -> bytes:
    req = json.loads(body)
    t = req["inputs"][0]
    x = np.asarray(t["data"], np.float32).reshape(t["shape"])
    p = float((x @ W)[0, 0])
    out = {"name": "prediction", "shape": [1], "datatype": "FP32", "data": [p]}
    return json.dumps({"model_name": "m", "model_version": "1", "outputs": [out]}).encode()


async def raw_asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    out = answer(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


def serve(kind: str, port: int) -> None:
    if kind == "aiohttp":
        from aiohttp import web

        async def infer(request):
            return web.Response(body=answer(await request.read()), content_type="application/json")

        app = web.Application()
        app.router.add_post("/v2/models/{name}/infer", infer)
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
        return
    import uvicorn

    app = raw_asgi
    if kind.startswith("starlette"):
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        async def infer(request):
            return Response(answer(await request.body()), media_type="application/json")

        app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"])])
    http = "h11" if kind.endswith("h11") else "httptools"
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        http=http,
        loop="asyncio",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def client(port: int, n: int) -> list[float]:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )
    lat = []
    for i in range(n + 200):
        t = time.perf_counter()
        s.sendall(req)
        buf = b""
        while True:
            buf += s.recv(65536)
            head = buf.find(b"\r\n\r\n")
            if head < 0:
                continue
            lines = buf[:head].lower().split(b"\r\n")
            length = int(next(v for v in lines if v.startswith(b"content-length")).split(b":")[1])
            if len(buf) >= head + 4 + length:
                break
        if i >= 200:
            lat.append(time.perf_counter() - t)
    s.close()
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from learnd.adapters.kafka.broker import free_port

    print("| stack | p50 us (each round) | p99 us (each round) |")
    print("|---|---|---|")
    for kind in STACKS:
        port = free_port()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)])
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    time.sleep(0.05)
            rounds = [np.array(client(port, args.n)) * 1e6 for _ in range(args.rounds)]
        finally:
            proc.terminate()
            proc.wait()
        p50 = " / ".join(f"{np.percentile(r, 50):.0f}" for r in rounds)
        p99 = " / ".join(f"{np.percentile(r, 99):.0f}" for r in rounds)
        print(f"| {kind} | {p50} | {p99} |", flush=True)


if __name__ == "__main__":
    main()
