from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from learnd.daemon.config import SchemaConfig
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

SCHEMA = SchemaConfig(task="binary", features=("a", "b"))


def weights(sign=1.0, bias=0.0):
    return DenseWeights(
        (np.full((2, 1), sign, np.float32),),
        (np.full(1, bias, np.float32),),
        "relu",
        np.zeros(2, np.float32),
        np.ones(2, np.float32),
        0.0,
        1.0,
    )


def draft(w=None):
    return Draft("binary", (0, 1), ("a", "b"), w or weights(), 10, {"accuracy": 0.9})


def test_versions_only_increase_and_history_is_bounded():
    ref = SnapshotRef(keep=2)
    versions = [ref.publish(draft()).version for _ in range(4)]
    assert versions == [1, 2, 3, 4] and [s.version for s in ref.history()] == [3, 4]
    ref.continue_from(10)
    assert ref.publish(draft()).version == 10
    ref.continue_from(3)
    assert ref.publish(draft()).version == 11


def test_older_kept_versions_are_spaced_so_rollback_reaches_back_in_time():
    base = SnapshotRef().publish(draft())
    ref = SnapshotRef(keep=2, spacing_s=10.0)
    for v in range(1, 42):  # 41 versions, one every 2 s of published time
        ref.adopt(replace(base, version=v, published_unix=2.0 * (v - 1)))
    kept = [(s.version, s.published_unix) for s in ref.history()]
    # the last two, and before them two of those that fell out, 10 s apart (1, 6, 11, ...)
    assert kept == [(31, 60.0), (36, 70.0), (40, 78.0), (41, 80.0)]
    assert ref.rollback(31).rolled_back_from == 31
    plain = SnapshotRef(keep=2)  # spacing 0: the last two only
    for v in range(1, 6):
        plain.adopt(replace(base, version=v, published_unix=2.0 * v))
    assert [s.version for s in plain.history()] == [4, 5]


def test_non_finite_model_is_never_published():
    ref = SnapshotRef()
    ref.publish(draft())
    bad = weights()
    bad.weights[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ref.publish(draft(bad))
    assert ref.current.version == 1


def test_concurrent_publishers_get_distinct_versions():
    ref = SnapshotRef(keep=1000)
    threads = [
        threading.Thread(target=lambda: [ref.publish(draft()) for _ in range(50)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s.version for s in ref.history()) == list(range(1, 201))
    assert ref.current.version == 200


@pytest.fixture
def handler():
    ref = SnapshotRef()
    ref.publish(draft())
    return RequestHandler(ref, SCHEMA, max_batch=3)


def test_predict_one_names_the_version(handler):
    ans = handler.handle({"op": "predict", "features": {"a": 1, "b": 1}, "id": "q1"})
    assert ans["ok"] and ans["version"] == 1 and ans["id"] == "q1"
    assert ans["prediction"] == 1 and ans["scores"]["1"] == pytest.approx(0.880797, abs=1e-6)
    assert handler.handle({"features": [-1, -1]})["prediction"] == 0  # op defaults to predict


def test_predict_many_uses_one_snapshot(handler):
    ans = handler.handle({"op": "predict_many", "instances": [[1, 1], {"a": -1, "b": -2}]})
    assert ans["version"] == 1 and [p["prediction"] for p in ans["predictions"]] == [1, 0]
    assert handler.handle({"op": "predict_many", "instances": []})["predictions"] == []


@pytest.mark.parametrize(
    ("req", "error"),
    [
        ([1, 2], "bad_request"),
        ({"op": "train"}, "unknown_op"),
        ({"op": "predict", "features": [1]}, "wrong_dimension"),
        ({"op": "predict", "features": {"a": 1}}, "missing_field"),
        ({"op": "predict", "features": {"a": 1, "b": "x"}}, "wrong_type"),
        ({"op": "predict"}, "missing_field"),
        ({"op": "predict_many", "instances": "x"}, "wrong_type"),
        ({"op": "predict_many", "instances": [[1, 1]] * 4}, "too_large"),
        ({"op": "predict_many", "instances": [[1, 1], [1]]}, "wrong_dimension"),
    ],
)
def test_malformed_requests_get_error_answers(handler, req, error):
    ans = handler.handle(req)
    assert ans["ok"] is False and ans["error"] == error and ans["detail"]


def test_health_and_info(handler):
    h = handler.handle({"op": "health"})
    assert h["ok"] and h["ready"] and h["version"] == 1
    info = handler.handle({"op": "info"})
    assert info["version"] == 1 and info["features"] == ["a", "b"] and info["n_parameters"] == 3


def test_not_ready_before_the_first_publish():
    h = RequestHandler(SnapshotRef(), SCHEMA)
    assert h.handle({"op": "predict", "features": [1, 1]})["error"] == "not_ready"
    assert h.handle({"op": "health"})["version"] is None


def test_pipelined_requests_share_a_forward_pass_in_order_and_never_go_backwards():
    ref = SnapshotRef()
    ref.publish(draft())
    h = RequestHandler(ref, SCHEMA)

    def single(req):  # an operation in the middle of the pipeline meets a publish
        answer = h.handle(req)
        ref.publish(draft(weights(sign=-1.0)))
        return answer

    reqs = [
        {"op": "predict", "features": [1, 2], "id": 0},
        {"op": "predict", "features": [1, 2, 3], "id": 1},  # wrong dimension: answered alone
        {"op": "predict", "features": {"a": 1, "b": 2}, "id": 2},
        {"op": "info", "id": 3},
        {"features": [1, 2], "id": 4},
        "not an object",
    ]
    out = h.handle_many(reqs, single=single)
    assert [a.get("id") for a in out] == [0, 1, 2, 3, 4, None]
    assert [a["ok"] for a in out] == [True, False, True, True, True, False]
    assert out[1]["error"] == "wrong_dimension"
    versions = [a["version"] for a in out if "version" in a]
    assert versions == sorted(versions) and versions[0] < versions[-1]
    snaps = {s.version: s for s in ref.history()}
    for a in (out[0], out[4]):  # each answer is its own version's prediction
        p = snaps[a["version"]].predict_many(np.array([[1.0, 2.0]]))[0]
        assert a["scores"] == {"0": round(float(p[0]), 6), "1": round(float(p[1]), 6)}
