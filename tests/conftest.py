"""Shared test helpers. Every test builds its own config, registry, topic names and temp dirs."""

from __future__ import annotations

import os
import uuid

import pytest
import torch

from learnd.daemon.config import LearndConfig
from learnd.daemon.events.synthetic import FEATURES

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist each worker would run torch with a thread per core: N workers x cores
    # threads on cores, and CPU steps crawl. One torch thread per worker.
    torch.set_num_threads(1)


def sea_config(tmp_path, **sections) -> LearndConfig:
    base = {
        "schema": {"task": "binary", "features": list(FEATURES)},
        "checkpoint": {"dir": str(tmp_path / "ckpt")},
        "serving": {"tcp_port": 0},
        "metrics": {"port": 0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return LearndConfig.model_validate(base)


@pytest.fixture
def unique():
    """A short unique suffix for topic and group names."""
    return uuid.uuid4().hex[:10]


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(),
            reason="no CUDA device here: the CUDA path runs only where torch sees a GPU",
        ),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Runs a test once on the CPU and once on CUDA where torch sees a GPU (skipped otherwise)."""
    return request.param
