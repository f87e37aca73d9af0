"""Typed events through the whole flow: dead letters, missing counts, checkpoints, serving."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock, MemoryCheckpointStore
from learnd.adapters.metrics.prometheus import LearndCollector
from learnd.daemon.config import LearndConfig
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service

FEATURES = {
    "amount": "number",
    "n_prev": {"type": "number", "missing": "impute"},
    "is_new": "boolean",
    "country": {"type": "category", "vocabulary": 8, "buckets": 16},
}


def config(tmp_path) -> LearndConfig:
    return LearndConfig.model_validate(
        {
            "schema": {"task": "binary", "features": FEATURES},
            "checkpoint": {"dir": str(tmp_path / "ckpt")},
            "serving": {"tcp_port": 0},
            "metrics": {"port": 0},
            "model": {"hidden": [8]},
        }
    )


def events(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = ["DE", "FR", "US", "JP"][int(rng.integers(4))]
        feats = {"amount": float(rng.normal()), "is_new": bool(rng.random() < 0.5), "country": c}
        if i % 5:
            feats["n_prev"] = float(rng.integers(10))
        if i % 7 == 0:
            del feats["country"]
        out.append({"features": feats, "label": int(c in ("DE", "US"))})
    return out


def build(cfg, store):
    clock = ManualClock()
    pipe = Pipeline(
        cfg, Learner(cfg.schema_, cfg.model, cfg.learning, "cpu"), ListDeadLetters(), clock
    )
    src = ListSource()
    svc = Service(pipe, src, store, cfg.checkpoint, clock=clock)
    return svc, pipe, src


def test_typed_events_are_learned_counted_checkpointed_and_served(tmp_path):
    cfg = config(tmp_path)
    store = MemoryCheckpointStore()
    svc, pipe, src = build(cfg, store)
    registry = CollectorRegistry()
    registry.register(LearndCollector(pipe, svc.health, src))
    svc.restore()
    bad = [
        {"features": {"amount": "12", "is_new": True, "country": "DE"}, "label": 1},
        {"features": {"amount": 1.0, "is_new": "yes", "country": "DE"}, "label": 1},
        {"features": {"amount": 1.0, "is_new": True, "country": 3.5}, "label": 1},
    ]
    src.append([*events(700, seed=1), *bad])
    while src.remaining():
        svc.step()
    svc.checkpoint()
    assert pipe.valid == 700
    assert dict(pipe.rejected) == {"wrong_type": 1, "not_boolean": 1, "not_category": 1}
    assert dict(pipe.missing) == {"n_prev": 140, "country": 100}
    sample = {
        s.labels["feature"]: s.value
        for m in registry.collect()
        if m.name == "learnd_missing_values"
        for s in m.samples
    }
    assert sample == {"n_prev": 140.0, "country": 100.0}
    # a restart from the checkpoint predicts exactly as the learner did
    state = store.saved[-1]
    svc2, pipe2, _ = build(cfg, store)
    svc2.restore()
    X = np.array([pipe.decoder.features.parse(e["features"])[0] for e in events(50, 2)], np.float32)
    assert np.array_equal(pipe2.learner.predict_many(X), pipe.learner.predict_many(X))
    assert state["schema"]["features"]["country"]["buckets"] == 16
    served = pipe.ref.current
    assert served is not None and served.info()["schema"]["n_prev"]["missing"] == "impute"
