"""A listener that cannot bind stops start-up with one line naming the config field to change.

Examples
--------
>>> import errno
>>> e = OSError(errno.EADDRINUSE, "Address already in use")
>>> print(bind_error("serving.tcp_port", "127.0.0.1", 7070, e))
serving.tcp_port: 127.0.0.1:7070 is already in use (another learnd, or another program): stop it or choose another port (serving.tcp_port, LEARND_SERVING__TCP_PORT)
"""

from __future__ import annotations

import errno

from learnd.daemon.errors import StartupError


def bind_error(field: str, host: str, port: int, e: OSError) -> StartupError:
    """``field``: the port's config key, e.g. ``serving.tcp_port``; its host key is beside it."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    env = "LEARND_" + field.upper().replace(".", "__")
    if e.errno == errno.EADDRINUSE:
        return StartupError(
            f"{field}: {where} is already in use (another learnd, or another program): "
            f"stop it or choose another port ({field}, {env})"
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"{field}: {host} is not an address of this machine")
    if e.errno == errno.EACCES:
        return StartupError(
            f"{field}: binding {where} is not permitted (ports below 1024 need root)"
        )
    return StartupError(f"{field}: cannot listen on {where}: {e.strerror or e}")
