"""A small blocking client for learnd's prediction socket (TCP or Unix).

Examples
--------
::

    with LearndClient.tcp("127.0.0.1", 7070) as c:
        answer = c.predict({"x1": 3.0, "x2": 7.5, "x3": 1.0})
        answer["prediction"], answer["version"]
"""

from __future__ import annotations

import socket
from typing import Any

import orjson


class LearndError(RuntimeError):
    def __init__(self, answer: dict):
        super().__init__(f"{answer.get('error')}: {answer.get('detail')}")
        self.answer = answer


class LearndClient:
    def __init__(self, sock: socket.socket, token: str | None = None):
        self.sock = sock
        self.token = token
        self._file = sock.makefile("rb")

    @classmethod
    def tcp(cls, host: str, port: int, token: str | None = None, timeout: float = 10.0):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, token)

    @classmethod
    def unix(cls, path: str, token: str | None = None, timeout: float = 10.0):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock, token)

    def request(self, req: dict[str, Any], check: bool = True) -> dict:
        """Send one request object and read its answer; raise :class:`LearndError` if not ok."""
        if self.token is not None:
            req = {**req, "token": self.token}
        self.sock.sendall(orjson.dumps(req) + b"\n")
        line = self._file.readline()
        if not line:
            raise ConnectionError("learnd closed the connection")
        answer = orjson.loads(line)
        if check and not answer.get("ok"):
            raise LearndError(answer)
        return answer

    def predict(self, features: dict | list) -> dict:
        return self.request({"op": "predict", "features": features})

    def predict_many(self, instances: list) -> dict:
        return self.request({"op": "predict_many", "instances": instances})

    def health(self) -> dict:
        return self.request({"op": "health"}, check=False)

    def info(self) -> dict:
        return self.request({"op": "info"})

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def __enter__(self) -> LearndClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
