"""The linear member learned beside the MLP: selection, checkpoints, serving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from learnd.daemon.config import LearndConfig, LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.selection import MemberSelection
from learnd.daemon.serving.compress import Unavailable, build_form
from learnd.daemon.serving.snapshot import Draft, SnapshotRef

SCHEMA = SchemaConfig(task="multiclass", n_features=8, classes=["a", "b", "c"])
OFF = LearningConfig(linear_member={"enabled": False})
BS = 32


def noisy_linear(n: int, seed: int = 3):
    """Three classes split by hyperplanes, 30% of the labels redrawn at random: a stream
    where a linear model beats the MLP early on."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = (X @ rng.normal(size=(8, 3))).argmax(1)
    flip = rng.random(n) < 0.3
    y[flip] = rng.integers(3, size=int(flip.sum()))
    return X, y.astype(np.int64)


def run(lrn: Learner, X, y, record=None) -> list:
    out = []
    for i in range(0, len(y), BS):
        if record is not None:
            record.append(lrn.selection.chosen)
        out.append(lrn.learn_many(X[i : i + BS], y[i : i + BS]))
        lrn.replay()
    return out


def test_the_weighted_errors_fold_a_batch_as_its_events_one_by_one():
    sel = MemberSelection(half_life=50, margin=0.1, min_events=0)
    rng = np.random.default_rng(0)
    s, w, decay = np.zeros(2), 0.0, 0.5 ** (1 / 50)
    for n in (5, 32, 1, 17):
        a, b = rng.random(n), rng.random(n)
        sel.update(a, b)
        for _ in range(n):  # each event enters with its batch's mean error
            s = decay * s + np.array([a.mean(), b.mean()])
            w = decay * w + 1.0
    np.testing.assert_allclose(sel.errors, s / w, rtol=1e-12)
    assert sel.events == 55


def test_the_other_member_takes_over_only_beyond_the_margin_and_after_min_events():
    sel = MemberSelection(half_life=1000, margin=0.1, min_events=64)
    sel.update(np.full(32, 0.5), np.full(32, 0.0))
    assert sel.chosen == 0  # 32 events: not judged yet
    sel = MemberSelection(half_life=1000, margin=0.1, min_events=0)
    sel.update(np.full(32, 0.5), np.full(32, 0.46))  # 8% better: within the margin
    assert (sel.chosen, sel.switches) == (0, 0)
    sel.update(np.full(32, 0.5), np.full(32, 0.40))
    assert (sel.chosen, sel.switches) == (1, 1)
    sel.update(np.array([np.nan, 0.0]), np.array([1.0, np.nan]))  # no event scored by both
    assert sel.events == 64


def test_served_outputs_are_the_chosen_members_and_the_linear_one_takes_over_at_batch_15():
    X, y = noisy_linear(1600)
    both = Learner(SCHEMA, ModelConfig(), LearningConfig(), "cpu")
    mlp = Learner(SCHEMA, ModelConfig(), OFF, "cpu")
    lin = Learner(SCHEMA, ModelConfig(kind="linear"), OFF, "cpu")
    chosen: list[int] = []
    served, alone_mlp, alone_lin = run(both, X, y, chosen), run(mlp, X, y), run(lin, X, y)
    # Each member learns exactly as it would alone; the chosen one's outputs are served.
    for c, r, m, li in zip(chosen, served, alone_mlp, alone_lin, strict=True):
        np.testing.assert_array_equal(r.outputs, (li if c else m).outputs)
        np.testing.assert_array_equal(r.errors, (li if c else m).errors)
    assert chosen.index(1) == 15 and all(chosen[15:])
    assert both.selection.switches == 1
    np.testing.assert_allclose(both.selection.errors, (0.2979285, 0.2498394), atol=1e-6)
    err = np.concatenate([r.errors for r in served]).mean()
    assert err < min(np.concatenate([r.errors for r in a]).mean() for a in (alone_mlp, alone_lin))


def trained(n: int = 800) -> Learner:
    X, y = noisy_linear(n)
    lrn = Learner(SCHEMA, ModelConfig(), LearningConfig(), "cpu")
    run(lrn, X, y)
    return lrn


def test_a_checkpoint_round_trip_continues_identically_with_the_linear_member_serving():
    a = trained()
    assert a.selection.chosen == 1
    b = Learner(SCHEMA, ModelConfig(seed=5), LearningConfig(), "cpu")
    b.load_state_dict(a.state_dict())
    X, y = noisy_linear(640, seed=4)
    for ra, rb in zip(run(a, X, y), run(b, X, y), strict=True):
        np.testing.assert_array_equal(ra.outputs, rb.outputs)
    assert a.selection.state_dict() == b.selection.state_dict()
    for pa, pb in zip(a.member.net.parameters(), b.member.net.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_a_checkpoint_written_without_the_member_loads_with_the_mlp_serving():
    old = Learner(SCHEMA, ModelConfig(), OFF, "cpu")
    X, y = noisy_linear(800)
    run(old, X, y)
    state = old.state_dict()
    assert "member" not in state and "selection" not in state
    lrn = Learner(SCHEMA, ModelConfig(), LearningConfig(), "cpu")
    lrn.load_state_dict(state)
    assert lrn.selection.chosen == 0 and lrn.selection.events == 0
    np.testing.assert_array_equal(lrn.member.x_scaler.mean, old.x_scaler.mean)
    assert lrn.member.steps == 0
    np.testing.assert_array_equal(lrn.predict_many(X[:50]), old.predict_many(X[:50]))
    # 200 events (min_events) scored by both before the fresh member may serve
    chosen: list[int] = []
    run(lrn, *noisy_linear(256, seed=4), chosen)
    assert chosen[:7] == [0] * 7


@pytest.mark.parametrize("linear_serving", [False, True])
def test_what_is_served_predicts_as_the_learner_does(linear_serving):
    lrn = trained(800 if linear_serving else 64)
    assert lrn.selection.chosen == int(linear_serving)
    X, _ = noisy_linear(200, seed=9)
    w = lrn.export()
    assert len(w.weights) == (1 if linear_serving else 3)
    ref = SnapshotRef()
    snap = ref.publish(Draft("multiclass", (0, 1, 2), None, w, lrn.events_learned, {}))
    np.testing.assert_allclose(snap.predict_many(X), lrn.predict_many(X), atol=1e-6)
    # The export is the serving member's own: every compressed form is built from its weights.
    own = lrn.serving.export() if not linear_serving else lrn.member.export()
    for a, b in zip(w.weights + w.biases, own.weights + own.biases, strict=True):
        np.testing.assert_array_equal(a, b)
    for form in ("prune", "int8"):
        fw = build_form(form, w, 0.5, 0.25)
        snap = ref.publish(Draft("multiclass", (0, 1, 2), None, w, 0, {}, forward=fw))
        got = snap.predict_many(X)
        assert got.shape == (200, 3) and np.allclose(got.sum(1), 1.0, atol=1e-5)
    if linear_serving:
        with pytest.raises(Unavailable):
            build_form("prune-units", w, 0.5, 0.25)


def test_drift_and_adoption_reach_the_member():
    lrn = trained()
    lrn.on_drift()
    assert lrn.member.lr == pytest.approx(3 * lrn.member.learning.lr, rel=1e-3)
    assert len(lrn.member.window) == 0
    fresh = Learner(SCHEMA, ModelConfig(), LearningConfig(), "cpu")
    fresh.adopt(lrn)
    assert fresh.selection.state_dict() == lrn.selection.state_dict()
    X, _ = noisy_linear(50, seed=9)
    np.testing.assert_array_equal(fresh.predict_many(X), lrn.predict_many(X))


def test_a_linear_model_has_no_member_and_the_config_names_a_bad_value():
    assert Learner(SCHEMA, ModelConfig(kind="linear"), LearningConfig(), "cpu").member is None
    assert Learner(SCHEMA, ModelConfig(), OFF, "cpu").member is None
    base = {"schema": {"task": "binary", "n_features": 2}, "checkpoint": {"dir": "/tmp/x"}}
    for key, bad in (("half_life_events", 0), ("margin", 1.0), ("enabled", "maybe")):
        with pytest.raises(ValidationError, match=key):
            LearndConfig.model_validate({**base, "learning": {"linear_member": {key: bad}}})


def test_typed_features_learn_in_both_members_and_serve_as_learned():
    from tests.unit.test_typed_learning import SCHEMA as TYPED
    from tests.unit.test_typed_learning import encoded, stream

    X, y = encoded(stream(640))
    lrn = Learner(TYPED, ModelConfig(hidden=(16,)), LearningConfig(lr=0.02), "cpu")
    lrn.selection.min_events = 10**9  # the MLP serves ...
    for i in range(0, 640, BS):
        lrn.learn_many(X[i : i + BS], y[i : i + BS])
    assert lrn.member.typed is not None and lrn.member.events_learned == 640
    for chosen in (0, 1):  # ... then the linear member, its table folded into its layer
        lrn.selection.chosen = chosen
        w = lrn.export()
        snap = SnapshotRef().publish(Draft("binary", (0, 1), None, w, 640, {}))
        np.testing.assert_allclose(snap.predict_many(X[:64]), lrn.predict_many(X[:64]), atol=1e-6)
        assert len(w.weights) == (2 if chosen == 0 else 1)


def test_the_ndjson_handler_oip_and_export_answer_as_the_learner_with_the_linear_member_serving(
    tmp_path,
):
    from learnd.adapters.cli.export import export
    from learnd.daemon.serving.oip import OipModel, Tensor
    from learnd.daemon.serving.requests import RequestHandler

    lrn = trained()
    assert lrn.selection.chosen == 1
    names = tuple(f"f{j}" for j in range(8))
    schema = SchemaConfig(task="multiclass", features=list(names), classes=["a", "b", "c"])
    ref = SnapshotRef()
    ref.publish(Draft("multiclass", ("a", "b", "c"), names, lrn.export(), 800, {}))
    X, _ = noisy_linear(40, seed=9)
    want = lrn.predict_many(X)
    handler = RequestHandler(ref, schema)
    ans = handler.handle({"op": "predict_many", "instances": X.tolist()})
    got = [[p["scores"][c] for c in "abc"] for p in ans["predictions"]]
    np.testing.assert_allclose(got, want, atol=1e-6)
    out = OipModel(ref, schema, "learnd", max_batch=50).infer(
        "learnd", None, [Tensor("input", "FP32", X.shape, X.reshape(-1))]
    )
    np.testing.assert_allclose(out.outputs[1].data, want, atol=1e-6)
    data = handler.handle({"op": "export", "version": 1})
    export(data, "torchscript", str(tmp_path / "m.pt"))
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    np.testing.assert_allclose(scripted(torch.from_numpy(X)).numpy(), want, atol=1e-6)
    ort = pytest.importorskip("onnxruntime", reason="the test extra's onnxruntime")
    export(data, "onnx", str(tmp_path / "m.onnx"))
    (onnx_out,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": X})
    np.testing.assert_allclose(onnx_out, want, atol=1e-6)


def test_the_metrics_say_which_member_serves(tmp_path):
    from prometheus_client import CollectorRegistry

    from learnd.adapters.fakes import ListSource
    from learnd.adapters.metrics.prometheus import LearndCollector
    from tests.conftest import sea_config
    from tests.unit.test_pipeline_service import build

    def samples(cfg):
        src = ListSource()
        svc, pipe, _, _ = build(cfg, src)
        registry = CollectorRegistry()
        registry.register(LearndCollector(pipe, svc.health, src))
        names = ("learnd_linear_member_serving", "learnd_member_switches_total")
        read = lambda: {n: registry.get_sample_value(n) for n in names}  # noqa: E731
        return pipe, read

    pipe, read = samples(sea_config(tmp_path / "a"))
    assert read() == {"learnd_linear_member_serving": 0.0, "learnd_member_switches_total": 0.0}
    pipe.learner.selection.chosen, pipe.learner.selection.switches = 1, 3
    assert read() == {"learnd_linear_member_serving": 1.0, "learnd_member_switches_total": 3.0}
    _, read = samples(sea_config(tmp_path / "b", learning={"linear_member": {"enabled": False}}))
    assert read() == {"learnd_linear_member_serving": None, "learnd_member_switches_total": None}
