"""Load-generating OIP clients for bench/oip.py, kept light (no torch): a keep-alive HTTP/1.1
client that sends one prepared request and reads the answer by its Content-Length, and a grpcio
client of ModelInfer. Both measure the server, not a client library."""

from __future__ import annotations

import socket
import time

import orjson

BODY = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [5.0, 4.0, 1.0]}]}
)
REQUEST = (
    b"POST /v2/models/learnd/infer HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class HttpClient:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def infer(self) -> bytes:
        self.sock.sendall(REQUEST)
        buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
            head = buf.find(b"\r\n\r\n")
            if head < 0:
                continue
            length = int(buf[buf.find(b"content-length:", 0, head) + 15 : head].split(b"\r\n")[0])
            if len(buf) >= head + 4 + length:
                body = buf[head + 4 : head + 4 + length]
                if not buf.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"failed answer: {buf[:300]!r}")
                return body

    def close(self) -> None:
        self.sock.close()


class GrpcClient:
    def __init__(self, port: int):
        import grpc

        from learnd.adapters.serving.oip_grpc import SERVICE, messages

        m = messages()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.call = self.channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=m["ModelInferRequest"].SerializeToString,
            response_deserializer=m["ModelInferResponse"].FromString,
        )
        req = m["ModelInferRequest"](model_name="learnd")
        req.inputs.add(name="input", datatype="FP32", shape=[1, 3])
        req.inputs[0].contents.fp32_contents.extend([5.0, 4.0, 1.0])
        self.request = req

    def infer(self):
        return self.call(self.request, timeout=30)

    def close(self) -> None:
        self.channel.close()


def run_http(port: int, start_at: float, seconds: float) -> tuple[int, list[float]]:
    """Sequential OIP/HTTP inferences from wall time ``start_at`` for ``seconds``."""
    c = HttpClient(port)
    for _ in range(20):
        c.infer()
    while time.time() < start_at:
        time.sleep(0.001)
    end, n, lat = start_at + seconds, 0, []
    while time.time() < end:
        t = time.perf_counter()
        c.infer()
        lat.append(time.perf_counter() - t)
        n += 1
    c.close()
    return n, lat
