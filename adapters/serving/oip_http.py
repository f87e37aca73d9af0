"""The Open Inference Protocol over HTTP/REST: a minimal ASGI app served by uvicorn (httptools).

Routes (``{name}`` is ``serving.model_name``, ``{v}`` any kept version)::

    GET  /v2/health/live   /v2/health/ready   /v2
    GET  /v2/models/{name}[/versions/{v}]   and   .../ready
    POST /v2/models/{name}[/versions/{v}]/infer

Tensors travel as JSON (``data`` flat or nested, row-major) or, as Triton's clients send them by
default, in the binary tensor extension (``Inference-Header-Content-Length``: a JSON header, then
each tensor's raw little-endian bytes, sized by its ``binary_data_size`` parameter). Errors are
``{"error": "..."}`` with 400 (malformed), 401 (token), 404 (unknown model, version or route),
405, 413 (body over ``serving.max_request_bytes``, refused from its Content-Length before it is
read) or 503 (no model yet, connection cap). With ``serving.token`` set, every request needs
``Authorization: Bearer <token>`` (compared in constant time, never logged).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from learnd.adapters.serving.oip_metrics import endpoint_of
from learnd.daemon.serving.oip import NUMERIC, InferResult, OipError, OipModel, Tensor
from learnd.daemon.serving.oip_bytes import bytes_elements, tensor_bytes

STATUS = {"invalid": 400, "not_found": 404, "unavailable": 503}
JSON = (b"content-type", b"application/json")
HEADER_LENGTH = "inference-header-content-length"


class OipHttpApp:
    """The ASGI application (one per serving process)."""

    def __init__(
        self,
        model: OipModel,
        token: str | None,
        max_body: int,
        server_version: str = "0.1.0",
        observe: Callable[[str, str, float], None] | None = None,
    ):
        """``observe(endpoint, code, seconds)`` counts each answer
        (:class:`learnd.adapters.serving.oip_metrics.OipMetrics`)."""
        self.model = model
        self.observe = observe or (lambda endpoint, code, seconds: None)
        self.token = token.encode() if token else None
        self.max_body = max_body
        self.server_version = server_version

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off; anything else is not ours
            return
        t0 = time.perf_counter()
        headers = dict(scope["headers"])
        status, body, extra = await self._answer(scope, headers, receive)
        self.observe(endpoint_of(scope["path"]), str(status), time.perf_counter() - t0)
        out = [JSON, (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope, headers: dict, receive) -> tuple[int, bytes, list]:
        if self.token is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                return _error(401, "missing or wrong bearer token")
        parts = scope["path"].strip("/").split("/")
        method = scope["method"]
        if parts[:1] != ["v2"]:
            return _error(404, f"no route {scope['path']!r}")
        if len(parts) == 1 or parts[1] == "health":
            if method != "GET":
                return _error(405, "use GET")
            if len(parts) == 1:
                return _ok(self.model.server_metadata(self.server_version))
            if parts[2:] == ["live"]:
                return _ok({"live": self.model.live()})
            if parts[2:] == ["ready"]:
                return _ok({"ready": True}) if self.model.ready() else _error(503, "not ready")
            return _error(404, f"no route {scope['path']!r}")
        if parts[1] != "models" or len(parts) < 3:
            return _error(404, f"no route {scope['path']!r}")
        name, rest = parts[2], parts[3:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                return _error(404, f"no route {scope['path']!r}")
            version, rest = rest[1], rest[2:]
        if rest == []:
            if method != "GET":
                return _error(405, "use GET")
            meta = self.model.model_metadata(name, version)
            return _fail(meta) if isinstance(meta, OipError) else _ok(meta)
        if rest == ["ready"]:
            if method != "GET":
                return _error(405, "use GET")
            ready = self.model.model_ready(name, version)
            if isinstance(ready, OipError):
                return _fail(ready)
            return _ok({"name": name, "ready": True}) if ready else _error(503, "not ready")
        if rest == ["infer"]:
            if method != "POST":
                return _error(405, "use POST")
            body = await self._body(headers, receive)
            if isinstance(body, tuple):
                return body
            return self._infer(name, version, body, headers.get(HEADER_LENGTH.encode()))
        return _error(404, f"no route {scope['path']!r}")

    async def _body(self, headers: dict, receive) -> bytes | tuple[int, bytes, list]:
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "Content-Length is not a number")
            if int(declared) > self.max_body:
                return self._too_large()
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _error(400, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:  # chunked transfer: stop at the cap
                return self._too_large()
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _too_large(self) -> tuple[int, bytes, list]:
        status, body, extra = _error(413, f"a request body may hold at most {self.max_body} bytes")
        return status, body, [*extra, (b"connection", b"close")]

    def _infer(self, name: str, version: str | None, body: bytes, header_length) -> tuple:
        decoded = decode_request(body, header_length)
        if isinstance(decoded, OipError):
            return _fail(decoded)
        req, inputs, requested, binary = decoded
        result = self.model.infer(name, version, inputs, [r for r, _ in requested])
        if isinstance(result, OipError):
            return _fail(result)
        return encode_response(result, req.get("id"), binary, dict(requested))


def decode_request(body: bytes, header_length: bytes | None):
    """``(request, inputs, [(output, binary?)], binary_default)`` or an :class:`OipError`."""
    try:
        split = len(body) if header_length is None else int(header_length)
        if not 0 <= split <= len(body):
            raise ValueError("Inference-Header-Content-Length exceeds the body")
        req = orjson.loads(body[:split])
    except (ValueError, orjson.JSONDecodeError) as e:
        return OipError("invalid", f"the request is not valid JSON: {e}")
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        return OipError("invalid", "the request must be an object with a list 'inputs'")
    raw = memoryview(body)[split:]
    inputs = []
    for i, spec in enumerate(req["inputs"]):
        tensor = _tensor(spec, i, raw)
        if isinstance(tensor, OipError):
            return tensor
        tensor, used = tensor
        raw = raw[used:]
        inputs.append(tensor)
    if len(raw):
        return OipError("invalid", f"{len(raw)} bytes after the last binary input")
    params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
    binary_default = params.get("binary_data_output") is True
    requested = []
    for out in req.get("outputs") or []:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            return OipError("invalid", "each requested output must be an object with a 'name'")
        p = out.get("parameters") if isinstance(out.get("parameters"), dict) else {}
        requested.append((out["name"], p.get("binary_data", binary_default) is True))
    return req, inputs, requested, binary_default


def _tensor(spec: Any, i: int, raw: memoryview) -> tuple[Tensor, int] | OipError:
    if not isinstance(spec, dict):
        return OipError("invalid", f"inputs[{i}] must be an object")
    name, dt, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(dt, str):
        return OipError("invalid", f"inputs[{i}] needs a string 'name' and 'datatype'")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return OipError("invalid", f"input {name!r}: 'shape' must be a list of sizes >= 0")
    params = spec.get("parameters") if isinstance(spec.get("parameters"), dict) else {}
    if dt == "BYTES" and params.get("binary_data_size") is None:  # typed categories, as JSON
        data = spec.get("data")
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            return OipError(
                "invalid", f"input {name!r}: BYTES 'data' must be a flat list of strings"
            )
        return Tensor(name, dt, tuple(shape), np.asarray(data, dtype=object)), 0
    size = params.get("binary_data_size")
    if dt == "BYTES":  # binary: length-prefixed elements
        if not isinstance(size, int) or size < 0 or size > len(raw):
            return OipError("invalid", f"input {name!r}: bad binary_data_size {size!r}")
        items = bytes_elements(name, raw[:size])
        if isinstance(items, OipError):
            return items
        return Tensor(name, dt, tuple(shape), items), size
    if dt not in NUMERIC:
        return OipError("invalid", f"input {name!r}: datatype {dt} is not supported here")
    dtype = np.dtype(NUMERIC[dt]).newbyteorder("<")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(raw) or size % dtype.itemsize:
            return OipError("invalid", f"input {name!r}: bad binary_data_size {size!r}")
        return Tensor(name, dt, tuple(shape), np.frombuffer(raw[:size], dtype)), size
    data = spec.get("data")
    if not isinstance(data, list):
        return OipError("invalid", f"input {name!r} needs 'data' (a list) or binary data")
    try:
        arr = np.asarray(data)
    except ValueError:
        return OipError("invalid", f"input {name!r}: 'data' is ragged")
    if arr.size and arr.dtype.kind not in "biuf":
        return OipError("invalid", f"input {name!r}: 'data' must hold numbers for {dt}")
    return Tensor(name, dt, tuple(shape), arr.reshape(-1).astype(dtype)), 0


def encode_response(
    result: InferResult, req_id: Any, binary_default: bool, binary: dict[str, bool]
) -> tuple[int, bytes, list]:
    outputs, blobs = [], []
    for t in result.outputs:
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if binary.get(t.name, binary_default):
            blob = tensor_bytes(t)
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = t.data.reshape(-1).tolist()
        outputs.append(out)
    answer: dict[str, Any] = {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "outputs": outputs,
    }
    if isinstance(req_id, str):
        answer["id"] = req_id
    head = orjson.dumps(answer)
    if not blobs:
        return 200, head, []
    return 200, head + b"".join(blobs), [(HEADER_LENGTH.encode(), str(len(head)).encode())]


def _ok(obj: dict) -> tuple[int, bytes, list]:
    return 200, orjson.dumps(obj), []


def _error(status: int, message: str) -> tuple[int, bytes, list]:
    return status, orjson.dumps({"error": message}), []


def _fail(err: OipError) -> tuple[int, bytes, list]:
    return _error(STATUS[err.kind], err.message)
