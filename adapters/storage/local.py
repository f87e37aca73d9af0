"""Checkpoint storage on a local directory: atomic, plain tensors only, newest K kept.

A checkpoint is written to a temporary file, fsynced, renamed into place with ``os.replace``,
and the directory is fsynced, so a crash leaves either the old or the new file, never half of
one. Loading uses ``torch.load(weights_only=True)``: nothing from disk is unpickled as code.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnd.daemon.errors import StartupError
from learnd.daemon.failpoints import NONE, Failpoints

log = logging.getLogger("learnd.checkpoint")

_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")


def to_plain(obj: Any) -> Any:
    """numpy arrays and scalars become tensors and Python numbers (torch's weights_only set)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)).clone()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


class CheckpointError(StartupError):
    """No checkpoint could be read although some exist."""


class LocalCheckpointStore:
    def __init__(self, directory: str | os.PathLike, keep: int = 3, failpoints: Failpoints = NONE):
        self.dir = Path(directory)
        self.failpoints = failpoints
        self.keep = keep
        self.fallbacks = 0  # corrupt checkpoints skipped while loading

    def _existing(self) -> list[tuple[int, Path]]:
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, state: Mapping[str, Any]) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = self._existing()
        seq = existing[-1][0] + 1 if existing else 1
        final = self.dir / f"ckpt-{seq:012d}.pt"
        tmp = self.dir / f".{final.name}.tmp"
        for stale in self.dir.glob(".ckpt-*.pt.tmp"):  # left by a writer killed mid-write
            stale.unlink(missing_ok=True)
        try:
            with open(tmp, "wb") as f:
                torch.save(to_plain(dict(state)), f)
                f.flush()
                os.fsync(f.fileno())
            self.failpoints.hit("after_temp_write")
            os.replace(tmp, final)
            self.failpoints.hit("after_rename")
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        except Exception as e:
            # torch reports a full disk as RuntimeError ("unexpected pos ..."): any failed write
            # is an OSError to the caller, which counts it and keeps serving.
            tmp.unlink(missing_ok=True)
            raise OSError(f"checkpoint write failed: {type(e).__name__}: {e}") from e
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for _, old in existing[: max(0, len(existing) + 1 - self.keep)]:
            old.unlink(missing_ok=True)
        return final.name

    def load_latest(self) -> dict[str, Any] | None:
        names = [path.name for _, path in reversed(self._existing())]
        state, skipped = load_newest(names, lambda name: self.dir / name, str(self.dir))
        self.fallbacks += skipped
        return state


def load_newest(
    names: list[str], source: Callable[[str], Any], where: str
) -> tuple[dict[str, Any] | None, int]:
    """Load the first readable checkpoint of ``names`` (newest first); return it and how many
    unreadable ones were skipped, each loudly. Raise if there were some but none is readable."""
    skipped = 0
    for name in names:
        try:
            state = torch.load(source(name), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint means: try the older one
            skipped += 1
            log.error(
                "checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                name,
                type(e).__name__,
                e,
                extra={"event": "checkpoint_corrupt"},
            )
            continue
        if not isinstance(state, dict) or state.get("format") != 1:
            skipped += 1
            log.error(
                "checkpoint %s has an unknown format; skipping it",
                name,
                extra={"event": "checkpoint_corrupt"},
            )
            continue
        state["id"] = name
        state["skipped_newer"] = skipped  # unreadable checkpoints newer than this one
        return state, skipped
    if names:
        raise CheckpointError(
            f"none of the {len(names)} checkpoints in {where} could be read; refusing to "
            "start from scratch over them (move them away to start a new model)"
        )
    return None, skipped
