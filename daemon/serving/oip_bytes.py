"""The Open Inference Protocol's binary form of a tensor: numbers as little-endian arrays, and
``BYTES`` as elements each prefixed by its length (4 bytes, little-endian). Both transports use
it, gRPC for ``raw_input_contents`` / ``raw_output_contents`` and HTTP for its binary extension.

Examples
--------
>>> import numpy as np
>>> t = Tensor("country", "BYTES", (2,), np.array(["DE", "FR"], object))
>>> raw = tensor_bytes(t)
>>> raw
b'\\x02\\x00\\x00\\x00DE\\x02\\x00\\x00\\x00FR'
>>> bytes_elements("country", raw).tolist()
['DE', 'FR']
>>> bytes_elements("country", raw[:-1]).message
"input 'country': a BYTES element runs past the end of its data"
"""

from __future__ import annotations

import struct

import numpy as np

from learnd.daemon.serving.oip import NUMERIC, OipError, Tensor

_LENGTH = struct.Struct("<I")


def tensor_bytes(t: Tensor) -> bytes:
    """``t`` in the protocol's binary form."""
    if t.datatype == "BYTES":
        items = [str(v).encode() for v in t.data.reshape(-1)]
        return b"".join(_LENGTH.pack(len(b)) + b for b in items)
    return np.ascontiguousarray(t.data, np.dtype(NUMERIC[t.datatype]).newbyteorder("<")).tobytes()


def bytes_elements(name: str, raw: bytes | memoryview) -> np.ndarray | OipError:
    """The strings of a binary ``BYTES`` tensor (UTF-8), or why it is malformed."""
    out: list[str] = []
    at, end = 0, len(raw)
    while at < end:
        if end - at < _LENGTH.size:
            return OipError("invalid", f"input {name!r}: a BYTES length prefix is cut short")
        (n,) = _LENGTH.unpack_from(raw, at)
        at += _LENGTH.size
        if n > end - at:
            return OipError(
                "invalid", f"input {name!r}: a BYTES element runs past the end of its data"
            )
        try:
            out.append(bytes(raw[at : at + n]).decode())
        except UnicodeDecodeError:
            return OipError("invalid", f"input {name!r}: a BYTES element is not UTF-8")
        at += n
    return np.asarray(out, dtype=object)


def strings(name: str, items) -> np.ndarray | OipError:
    """gRPC's ``bytes_contents``: one bytes value per element, UTF-8."""
    try:
        return np.asarray([bytes(b).decode() for b in items], dtype=object)
    except UnicodeDecodeError:
        return OipError("invalid", f"input {name!r}: a BYTES element is not UTF-8")
