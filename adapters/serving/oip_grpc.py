"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` through grpcio's
asyncio server.

The messages come from the protocol's own ``proto/open_inference_grpc.proto`` (vendored with its
licence), compiled once by ``grpc_tools.protoc`` into ``proto/open_inference_grpc.desc`` (a
``FileDescriptorSet``; ``scripts/gen_oip_descriptor.sh``; a unit test checks it matches the
.proto) and loaded here into a private descriptor pool. So the runtime needs only grpcio and
protobuf (no protoc, no generated ``_pb2`` modules whose protobuf version must match the
runtime's), and the ``inference.*`` names cannot collide with another copy of the same protocol
in the process (Triton's and KServe's clients each register one).

Inputs arrive in ``contents`` or in ``raw_input_contents`` (what Triton's client sends); outputs
go out in ``raw_output_contents`` (what Triton's and KServe's clients read). Errors are gRPC
statuses: INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, UNAUTHENTICATED (``serving.token`` as
``authorization: Bearer <token>`` metadata), RESOURCE_EXHAUSTED (messages over
``serving.max_request_bytes``, more than ``serving.max_connections`` RPCs at once).
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import time
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from learnd.adapters.serving.loop_thread import LoopThread
from learnd.daemon.config import ServingConfig
from learnd.daemon.serving.oip import NUMERIC, OipError, OipModel, Tensor
from learnd.daemon.serving.oip_bytes import bytes_elements, strings, tensor_bytes

SERVICE = "inference.GRPCInferenceService"
CODES = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
RPCS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
ENDPOINTS = {
    "ServerLive": "live",
    "ServerReady": "ready",
    "ModelReady": "ready",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "infer",
}


@cache
def messages() -> dict[str, Any]:
    """The protocol's message classes, by short name (``ModelInferRequest``...)."""
    data = files("learnd.adapters.serving").joinpath("proto/open_inference_grpc.desc").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(proto)
    out = {}
    for rpc in RPCS:
        for kind in ("Request", "Response"):
            desc = pool.FindMessageTypeByName(f"inference.{rpc}{kind}")
            out[f"{rpc}{kind}"] = message_factory.GetMessageClass(desc)
    return out


def reserve_port(cfg: ServingConfig) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket holding ``serving.oip_grpc_port`` (port 0: a
    free one) so that every serving process's gRPC server can listen on that same port."""
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.tcp_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((cfg.tcp_host, cfg.oip_grpc_port or 0))
    return sock


class Refused(Exception):
    """An RPC answered with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse(err: OipError) -> Refused:
    return Refused(CODES[err.kind], err.message)


class OipServicer:
    """The six RPCs over one :class:`OipModel`. ``observe(endpoint, code, seconds)`` counts each
    answer (:class:`learnd.adapters.serving.oip_metrics.OipMetrics`)."""

    def __init__(
        self,
        model: OipModel,
        token: str | None,
        server_version: str = "0.1.0",
        observe: Callable[[str, str, float], None] | None = None,
    ):
        self.model = model
        self.token = b"Bearer " + token.encode() if token else None
        self.server_version = server_version
        self.observe = observe or (lambda endpoint, code, seconds: None)
        self.m = messages()

    def _check(self, context) -> None:
        if self.token is None:
            return
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(given.encode(), self.token):
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def ServerLive(self, request, context):
        return self.m["ServerLiveResponse"](live=self.model.live())

    def ServerReady(self, request, context):
        return self.m["ServerReadyResponse"](ready=self.model.ready())

    def ModelReady(self, request, context):
        ready = self.model.model_ready(request.name, request.version or None)
        return self.m["ModelReadyResponse"](ready=ready is True)

    def ServerMetadata(self, request, context):
        return self.m["ServerMetadataResponse"](**self.model.server_metadata(self.server_version))

    def ModelMetadata(self, request, context):
        meta = self.model.model_metadata(request.name, request.version or None)
        if isinstance(meta, OipError):
            raise _refuse(meta)
        meta["properties"] = meta.pop("parameters")
        return self.m["ModelMetadataResponse"](**meta)

    def ModelInfer(self, request, context):
        inputs = decode_inputs(request)
        if isinstance(inputs, OipError):
            raise _refuse(inputs)
        requested = [o.name for o in request.outputs]
        result = self.model.infer(
            request.model_name, request.model_version or None, inputs, requested
        )
        if isinstance(result, OipError):
            raise _refuse(result)
        response = self.m["ModelInferResponse"](
            model_name=result.model_name, model_version=result.model_version, id=request.id
        )
        for t in result.outputs:
            response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
            response.raw_output_contents.append(tensor_bytes(t))
        return response

    def _rpc(self, name: str):
        method = getattr(self, name)
        endpoint = ENDPOINTS[name]

        async def call(request, context):
            t0 = time.perf_counter()
            try:
                self._check(context)
                response = method(request, context)
            except Refused as e:
                self.observe(endpoint, e.code.name, time.perf_counter() - t0)
                await context.abort(e.code, e.message)
            self.observe(endpoint, "OK", time.perf_counter() - t0)
            return response

        return call

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            rpc: grpc.unary_unary_rpc_method_handler(
                self._rpc(rpc),
                request_deserializer=self.m[f"{rpc}Request"].FromString,
                response_serializer=self.m[f"{rpc}Response"].SerializeToString,
            )
            for rpc in RPCS
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)


def decode_inputs(request) -> list[Tensor] | OipError:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        return OipError("invalid", "raw_input_contents must hold one entry per input")
    out = []
    for i, spec in enumerate(request.inputs):
        dt, shape = spec.datatype, tuple(spec.shape)
        if any(d < 0 for d in shape):
            return OipError("invalid", f"input {spec.name!r}: shape sizes must be >= 0")
        if dt == "BYTES":  # typed categories: strings
            items = (
                bytes_elements(spec.name, raw[i])
                if raw
                else strings(spec.name, spec.contents.bytes_contents)
            )
            if isinstance(items, OipError):
                return items
            out.append(Tensor(spec.name, dt, shape, items))
            continue
        if dt not in NUMERIC or dt == "FP16" and not raw:
            return OipError("invalid", f"input {spec.name!r}: datatype {dt} is not supported here")
        dtype = np.dtype(NUMERIC[dt]).newbyteorder("<")
        if raw:
            if len(raw[i]) % dtype.itemsize:
                return OipError("invalid", f"input {spec.name!r}: raw size fits no {dt} tensor")
            data = np.frombuffer(raw[i], dtype)
        else:
            data = np.asarray(getattr(spec.contents, CONTENTS[dt]), dtype)
        out.append(Tensor(spec.name, dt, shape, data))
    return out


class OipGrpcServer(LoopThread):
    """grpcio's asyncio server in a thread with its own event loop."""

    start_errors = (OSError, RuntimeError)

    def __init__(self, servicer: OipServicer, cfg: ServingConfig, port: int):
        super().__init__("learnd-oip-grpc", "the OIP/gRPC server")
        self.servicer = servicer
        self.cfg = cfg
        self.port = port
        self._server: Any = None

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._error is None:
            loop.run_until_complete(self._server.stop(1.0))

    async def _open(self) -> None:
        cfg = self.cfg
        self._server = grpc.aio.server(
            handlers=[self.servicer.handler()],
            maximum_concurrent_rpcs=cfg.max_connections,
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", cfg.max_request_bytes),
                ("grpc.max_connection_idle_ms", int(cfg.idle_timeout_s * 1000)),
            ],
        )
        host = f"[{cfg.tcp_host}]" if ":" in cfg.tcp_host else cfg.tcp_host
        if self._server.add_insecure_port(f"{host}:{self.port}") != self.port:
            raise OSError(f"the OIP/gRPC server could not listen on {host}:{self.port}")
        await self._server.start()
