"""Where the client commands (`learnd predict`, `health`, `versions`, `rollback`) find the daemon.

The address, Unix path and token come from the same config the daemon reads (``--config`` or
``LEARND_CONFIG``, then ``LEARND_SERVING__*`` variables, then ``--set serving.KEY=VALUE``);
``--tcp``, ``--unix`` and ``--token`` beat it. A daemon bound to every interface (``0.0.0.0``,
``::``) is reached on loopback. When the config names a Unix socket, it is used: it is local,
and guarded by file permissions as well as by the token.

Failing to connect is a sentence that says where it looked and what to check, not a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from dataclasses import dataclass

from learnd.adapters.serving.client import LearndClient
from learnd.adapters.settings import serving_config

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on 127.0.0.1), for ``--tcp``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"takes HOST:PORT, e.g. 127.0.0.1:7070 (got {text!r})")
    return host, int(port)


def add_where_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="the daemon's config file; default $LEARND_CONFIG")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="serving.KEY=VALUE",
        help="override a serving value of the config (repeatable)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--tcp",
        type=host_port,
        metavar="HOST:PORT",
        help="the daemon's address (default: serving.tcp_host and serving.tcp_port)",
    )
    where.add_argument("--unix", metavar="PATH", help="Unix socket (default: serving.unix_path)")
    p.add_argument("--token", help="auth token (default: serving.token, $LEARND_SERVING__TOKEN)")


@dataclass(frozen=True)
class Target:
    tcp: tuple[str, int] | None
    unix: str | None
    token: str | None
    origin: str  # where the address came from, for error messages

    def __str__(self) -> str:
        if self.unix is not None:
            return f"the Unix socket {self.unix}"
        assert self.tcp is not None
        host, port = self.tcp
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NoDaemon(Exception):
    """Nothing answers where the daemon should be; the message says where and what to check."""


def target(args: argparse.Namespace, environ=None) -> Target:
    """The daemon's address and token: the flags, else the config (raises ``ConfigError``)."""
    cfg = serving_config(args.config, os.environ if environ is None else environ, args.set)
    token = args.token
    if token is None and cfg.token is not None:
        token = cfg.token.get_secret_value()
    if args.unix:
        return Target(None, args.unix, token, "--unix")
    if args.tcp:
        return Target(args.tcp, None, token, "--tcp")
    if cfg.unix_path is not None:
        return Target(None, str(cfg.unix_path), token, "serving.unix_path")
    if not cfg.tcp_port:  # None is impossible without a unix_path; 0 means "any free port"
        raise NoDaemon(
            "serving.tcp_port is 0 (the daemon picks a free port at start): give --tcp HOST:PORT"
        )
    host = WILDCARDS.get(cfg.tcp_host, cfg.tcp_host)
    return Target((host, cfg.tcp_port), None, token, "serving.tcp_host and serving.tcp_port")


def connect(t: Target, timeout: float = 10.0) -> LearndClient:
    """A client connected to ``t``, or :class:`NoDaemon` with one line that says why not."""
    try:
        if t.unix is not None:
            return LearndClient.unix(t.unix, token=t.token, timeout=timeout)
        assert t.tcp is not None
        return LearndClient.tcp(*t.tcp, token=t.token, timeout=timeout)
    except OSError as e:
        raise NoDaemon(explain(t, e)) from None


def explain(t: Target, e: OSError) -> str:
    hint = f"is `learnd run` up? (address from {t.origin}; see --tcp, --unix, --config)"
    if isinstance(e, FileNotFoundError):
        return f"no socket at {t.unix}: {hint}"
    if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
        return f"nothing listens on {t}: {hint}"
    if isinstance(e, PermissionError):
        return f"not allowed to connect to {t} (run as a user in the socket's group)"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve {t.tcp[0] if t.tcp else t}: {e.strerror or e}"
    if isinstance(e, TimeoutError):
        return f"no answer from {t} within the timeout: is the host reachable?"
    return f"cannot connect to {t}: {e.strerror or e}"


def ask(t: Target, client: LearndClient, req: dict) -> dict:
    """One request's answer (an error answer too); :class:`NoDaemon` if the connection drops."""
    try:
        return client.request(req, check=False)
    except OSError as e:  # ConnectionError too: closed before answering
        raise NoDaemon(f"{t} closed the connection without an answer: {e.strerror or e}") from None
