"""Typed features through learning, checkpoints and serving."""

from __future__ import annotations

import numpy as np
import orjson
import torch

from learnd.adapters.serving.shared_snapshots import decode as decode_shared
from learnd.adapters.serving.shared_snapshots import encode as encode_shared
from learnd.adapters.storage.local import LocalCheckpointStore
from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.events.decoder import EventDecoder
from learnd.daemon.events.record import Record
from learnd.daemon.learning.learner import Learner
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.snapshot_state import snapshot_from_state, snapshot_state

FEATURES = {
    "x": {"type": "number", "missing": "impute"},
    "flag": "boolean",
    "c": {"type": "category", "vocabulary": 20, "buckets": 64},
    "t": {"type": "tokens", "max_tokens": 2, "vocabulary": 4, "buckets": 8},
}
SCHEMA = SchemaConfig(task="binary", features=FEATURES)


def stream(n: int, seed: int = 0) -> list[dict]:
    """The label is the parity of the category's number, flipped by the flag."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(40))
        flag = bool(rng.random() < 0.5)
        x = None if rng.random() < 0.2 else float(rng.normal())
        feats = {"x": x, "flag": flag, "c": f"v{k}", "t": [f"t{k % 3}"]}
        out.append({"features": feats, "label": int((k % 2 == 0) ^ flag)})
    return out


def encoded(events: list[dict]):
    recs = [Record("t", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    ok, bad = EventDecoder(SCHEMA).decode_many(recs)
    assert bad == []
    return ok.X, ok.y


def learner() -> Learner:
    return Learner(SCHEMA, ModelConfig(hidden=(16,)), LearningConfig(lr=0.02), "cpu")


def learn(lrn: Learner, X, y) -> list[float]:
    errs = []
    for i in range(0, len(y), 32):
        errs.append(float(lrn.learn_many(X[i : i + 32], y[i : i + 32]).errors.mean()))
        lrn.replay()
    return errs


def test_a_categorical_concept_is_learned():
    X, y = encoded(stream(4000))
    errs = learn(learner(), X, y)
    assert np.mean(errs[:10]) > 0.3 and np.mean(errs[-30:]) < 0.05


def test_a_step_touches_only_the_rows_of_the_values_in_its_batch():
    lrn = learner()
    X, y = encoded(stream(600))
    learn(lrn, X[:576], y[:576])
    emb = lrn.typed
    assert emb is not None
    before = emb.state_dict()
    batch = X[576:608]
    lrn.learn_many(batch, y[576:608])
    touched = set(emb.rows(emb.split(batch)[1], add=False).ravel().tolist()) - {-1}
    after = emb.state_dict()
    # each row's weights, average and both Adam moments: changed only where touched
    for part in range(4):
        diff = (after["packed"][:, part] != before["packed"][:, part]).any(1)
        changed = set(torch.nonzero(diff).ravel().tolist())
        assert changed and changed <= touched, part
    # the replay window holds the encoded rows (keys), not one-hot columns
    assert lrn.window.rows()[0].shape[1] == SCHEMA.dim


def test_checkpoint_round_trip_with_vocabularies(tmp_path):
    X, y = encoded(stream(2000, seed=1))
    a = learner()
    learn(a, X[:1024], y[:1024])
    store = LocalCheckpointStore(tmp_path / "ckpt")
    store.save({"format": 1, "learner": a.state_dict()})
    b = learner()
    b.load_state_dict(store.load_latest()["learner"])
    assert b.typed is not None and a.typed is not None
    assert (
        b.typed.vocab.maps == a.typed.vocab.maps and len(b.typed.vocab) == 20 + 3
    )  # c at its cap, t0..t2
    learn(a, X[1024:], y[1024:])
    learn(b, X[1024:], y[1024:])
    assert np.array_equal(a.predict_many(X), b.predict_many(X))
    assert np.array_equal(a.typed.table, b.typed.table)


def test_serving_answers_a_typed_request_exactly_as_the_learner_predicts():
    X, y = encoded(stream(1500, seed=2))
    lrn = learner()
    learn(lrn, X, y)
    ref = SnapshotRef()
    snap = ref.publish(Draft("binary", (0, 1), SCHEMA.feature_names, lrn.export(), 1500, {}))
    assert snap is not None
    # what a serving process reads: the shared-memory bytes, and the checkpointed state
    served = decode_shared(encode_shared(snap))
    restored = snapshot_from_state(snapshot_state(snap))
    requests = [
        {"x": 0.3, "flag": True, "c": "v4", "t": ["t1"]},
        {"x": None, "flag": 0, "c": "never-seen", "t": []},  # unseen: its bucket
        {"flag": False},  # every imputing feature missing
    ]
    Xq = np.array([EventDecoder(SCHEMA).features.parse(r)[0] for r in requests], np.float32)
    want = lrn.predict_many(Xq)
    for s in (snap, served, restored):
        np.testing.assert_allclose(s.predict_many(Xq), want, rtol=0, atol=2e-6)
    handler = RequestHandler(ref, SCHEMA)
    answers = handler.handle_many([{"op": "predict", "features": r} for r in requests])
    many = handler.handle({"op": "predict_many", "instances": requests})
    for i, ans in enumerate(answers):
        assert ans["ok"] and abs(ans["scores"]["1"] - float(want[i, 1])) < 1e-5
        assert many["predictions"][i]["scores"] == ans["scores"]
    bad = handler.handle({"op": "predict", "features": {"flag": "yes"}})
    assert bad["error"] == "not_boolean"
    info = handler.handle({"op": "info"})
    assert info["schema"]["c"]["type"] == "category" and info["n_features"] == SCHEMA.dim
