"""Compressed forms: pruning and quantization round trips, the form choice, rollback."""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np
import pytest
import torch

from learnd.daemon.config import CompressionConfig, LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.events.synthetic import FEATURES, DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.serving.compress import (
    build_form,
    build_forms,
    prune_global,
    prune_module,
    prune_units,
    select_form,
    to_module,
)
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, Snapshot, SnapshotRef

SEA = SchemaConfig(task="binary", features=FEATURES)


@pytest.fixture(scope="module")
def trained():
    """A default-size model trained on 8k SEA events, and 3k fresh events it has not seen."""
    events = list(DriftingSEA(seed=3, switch_every=10**9).take(11_000))
    X = np.array([[e["features"][k] for k in FEATURES] for e in events], np.float32)
    y = np.array([e["label"] for e in events], np.float32)
    lrn = Learner(SEA, ModelConfig(), LearningConfig(lr=0.003), "cpu")
    for i in range(0, 8000, 32):
        lrn.learn_many(X[i : i + 32], y[i : i + 32])
    draft = Draft("binary", (0, 1), FEATURES, lrn.export(), 8000, {})
    return draft, X[8000:], y[8000:]


def outputs(draft, forward, X):
    return Snapshot.from_draft(Draft(**{**_fields(draft), "forward": forward}), -1).predict_many(X)


def _fields(draft):
    return {f: getattr(draft, f) for f in draft.__slots__}


def test_global_pruning_is_permanent_and_hits_the_asked_sparsity(trained):
    draft, X, _ = trained
    pruned = prune_global(draft.weights, 0.5)
    total = sum(w.size for w in pruned.weights)
    zeros = sum(int((w == 0).sum()) for w in pruned.weights)
    assert zeros == round(0.5 * total)
    net = prune_module(to_module(draft.weights), 0.5)  # permanent: no weight_orig / weight_mask
    assert not any(m._forward_pre_hooks for m in net)
    assert sorted(net.state_dict()) == [
        "0.bias",
        "0.weight",
        "2.bias",
        "2.weight",
        "4.bias",
        "4.weight",
    ]
    # the smallest magnitudes went: every surviving weight is at least as large as any zeroed one
    flat_before = np.concatenate([w.ravel() for w in draft.weights.weights])
    flat_after = np.concatenate([w.ravel() for w in pruned.weights])
    assert np.abs(flat_before[flat_after == 0]).max() <= np.abs(flat_after[flat_after != 0]).min()
    assert build_form("prune", draft.weights, 0.5, 0.25).sparsity == pytest.approx(zeros / total)


def test_unit_pruning_shrinks_layers_and_equals_the_masked_network(trained):
    draft, X, _ = trained
    w = draft.weights
    small = prune_units(w, 0.25)
    assert [a.shape for a in small.weights] == [(3, 48), (48, 48), (48, 1)]
    # Zeroing the removed units in the full network gives exactly the small network's outputs.
    masked = [a.copy() for a in w.weights]
    masked_b = [b.copy() for b in w.biases]
    for i in range(2):
        norms = np.linalg.norm(w.weights[i], axis=0)
        drop = np.argsort(norms, kind="stable")[:16]
        masked[i][:, drop] = 0
        masked_b[i][drop] = 0
    full = build_form(
        "numpy",
        type(w)(
            **{
                **{f: getattr(w, f) for f in w.__slots__},
                "weights": tuple(masked),
                "biases": tuple(masked_b),
            }
        ),
        0.5,
        0.25,
    )
    shrunk = build_form("prune-units", w, 0.5, 0.25)
    Z = (X[:500] - w.x_mean) * w.x_inv_std
    np.testing.assert_allclose(shrunk(Z), full(Z), rtol=1e-5, atol=1e-5)
    assert shrunk.n_parameters < build_form("numpy", w, 0.5, 0.25).n_parameters


def test_int8_form_matches_the_plain_copy_and_its_deprecation_is_handled(trained):
    draft, X, y = trained
    if torch.cuda.is_available():
        # torchao's own source warns as it compiles (SyntaxWarning on Python 3.12): import it
        # first, outside the error filter below, which is about learnd's calls.
        with contextlib.suppress(Exception):
            import torchao.quantization  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak: the deprecation is caught inside
        form = build_form("int8", draft.weights, 0.5, 0.25)
    # on a GPU through torchao where it works, else (no GPU, or no torchao) on the CPU
    assert form.form == ("cuda-int8" if torchao_works() else "torch-int8")
    plain = build_form("numpy", draft.weights, 0.5, 0.25)
    a, b = outputs(draft, form, X), outputs(draft, plain, X)
    assert np.abs(a - b).max() < 0.05
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.99
    assert form.size_bytes < plain.size_bytes / 2  # int8 weights: about a quarter


def torchao_works() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import torchao.quantization  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    return True


def test_a_torch_without_quantize_dynamic_makes_int8_unavailable(trained, monkeypatch):
    draft, _, _ = trained
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # no torchao either
    built = {b.name: b for b in build_forms(("int8",), draft.weights, 0.5, 0.25)}
    assert built["int8"].forward is None and "quantize_dynamic" in built["int8"].reason
    if torch.cuda.is_available():
        assert "torchao" in built["int8"].reason


def test_a_gpu_without_torchao_serves_int8_from_the_cpu(trained, monkeypatch):
    draft, X, _ = trained
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine...
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # ...without torchao
    form = build_form("int8", draft.weights, 0.5, 0.25)
    assert form.form == "torch-int8"
    plain = build_form("numpy", draft.weights, 0.5, 0.25)
    assert np.abs(outputs(draft, form, X) - outputs(draft, plain, X)).max() < 0.05


def test_half_precision_needs_cuda_and_matches_there(trained, device):
    draft, X, _ = trained
    built = {b.name: b for b in build_forms(("fp16", "bf16"), draft.weights, 0.5, 0.25)}
    if device == "cpu":
        if not torch.cuda.is_available():
            assert built["fp16"].forward is None and built["fp16"].reason == "needs a CUDA device"
        return
    plain = build_form("numpy", draft.weights, 0.5, 0.25)
    for name, tol in (("fp16", 0.01), ("bf16", 0.05)):
        out = outputs(draft, built[name].forward, X)
        assert np.abs(out - outputs(draft, plain, X)).max() < tol


def test_the_choice_serves_a_form_within_tolerance_and_rejects_a_damaging_one(trained):
    draft, X, y = trained
    served, rows = select_form(draft, X, y, CompressionConfig(forms=("prune-units", "torch")))
    by = {r["name"]: r for r in rows}
    assert sum(r["outcome"] == "served" for r in rows) == 1
    assert by["torch"]["outcome"] in ("slower", "passed", "served")
    plain_acc = np.mean(outputs(draft, None, X).argmax(1) == y)
    served_acc = np.mean(Snapshot.from_draft(served, -1).predict_many(X).argmax(1) == y)
    assert served_acc >= plain_acc - 0.005
    # pruning 97% of the weights wrecks the model: refused, and the plain copy stays served
    served, rows = select_form(
        draft, X, y, CompressionConfig(forms=("prune",), prune_amount=0.97, tolerance=0.001)
    )
    by = {r["name"]: r for r in rows}
    assert by["prune"]["outcome"] == "worse" and by["numpy"]["outcome"] == "served"
    assert served.forward is not None and served.forward.form == "numpy-fp32"
    # a form that is as good but not faster does not replace the plain copy
    _, rows = select_form(draft, X, y, CompressionConfig(forms=("torch",), min_speedup=100.0))
    assert {r["name"]: r["outcome"] for r in rows} == {"numpy": "served", "torch": "slower"}


def test_rollback_serves_an_old_version_as_a_new_one_and_pins(trained):
    draft, X, _ = trained
    ref = SnapshotRef(keep=3)
    for _ in range(4):
        ref.publish(draft)
    assert [s.version for s in ref.history()] == [2, 3, 4]
    with pytest.raises(LookupError, match=r"version 1 is not kept; kept versions: \[2, 3, 4\]"):
        ref.rollback(1)
    snap = ref.rollback(2)
    assert (snap.version, snap.rolled_back_from, ref.pinned) == (5, 2, True)
    assert ref.current is snap and ref.publish(draft) is None  # pinned: publishing refused
    assert ref.rollback(5).rolled_back_from == 2  # a rollback of a rollback names the original
    assert ref.unpin() and not ref.pinned
    assert ref.publish(draft).version == 7


def test_rollback_over_the_socket_handler(trained):
    draft, _, _ = trained
    ref = SnapshotRef()
    for _ in range(3):
        ref.publish(draft)
    h = RequestHandler(ref, SEA)
    assert [v["version"] for v in h.handle({"op": "versions"})["versions"]] == [1, 2, 3]
    assert h.handle({"op": "rollback", "version": 9})["error"] == "unknown_version"
    assert h.handle({"op": "rollback", "version": "1"})["error"] == "wrong_type"
    answer = h.handle({"op": "rollback", "version": 1})
    assert answer == {"ok": True, "version": 4, "rolled_back_from": 1, "pinned": True}
    assert h.handle({"op": "predict", "features": [1, 2, 3]})["version"] == 4
    assert h.handle({"op": "info"})["rolled_back_from"] == 1
    assert h.handle({"op": "unpin"}) == {"ok": True, "was_pinned": True, "pinned": False}
    locked = RequestHandler(ref, SEA, allow_rollback=False)
    assert locked.handle({"op": "rollback", "version": 1})["error"] == "forbidden"


def test_the_pipeline_compresses_through_the_gate_skips_after_drift_and_respects_a_pin(tmp_path):
    from tests.conftest import sea_config
    from tests.unit.test_pipeline_service import build, drain

    cfg = sea_config(
        tmp_path,
        learning={"publish_every_events": 1000, "gate": {"window": 500}},
        compression={"forms": ["prune-units", "torch"], "after_drift_events": 3000},
    )
    svc, pipe, src, _ = build(cfg)
    src.append(list(DriftingSEA(seed=4, switch_every=8000).take(20_000)))
    svc.restore()
    drain(svc, src)
    served = {k: v for k, v in pipe.publisher.compression.items() if k[1] == "served"}
    skipped = pipe.publisher.compression[("all", "skipped_drift")]
    assert pipe.drift.alarms >= 1 and skipped >= 1  # the switch at 8000 raised an alarm
    assert (
        sum(served.values()) + skipped == pipe.publisher.published - 1
    )  # the first publish is plain
    # every form measured once (the clock stands still: no second measurement is due), then
    # each candidate served in the form chosen, checked against its plain copy
    measured = {k[0] for k in pipe.publisher.compression if k[1] in ("slower", "passed", "worse")}
    assert measured | {k[0] for k in served} >= {"prune-units", "torch", "numpy"}
    assert {s.form for s in pipe.ref.history()} <= {"numpy-fp32", "numpy-units0.25", "torch-fp32"}
    assert sum(r["outcome"] == "served" for r in pipe.publisher.last_forms) == 1
    # an operator's rollback pins serving: later publishes are counted, not served
    pinned_at = pipe.ref.rollback(pipe.ref.history()[0].version).version
    src.append(list(DriftingSEA(seed=5).take(3000)))
    drain(svc, src)
    assert pipe.ref.current.version == pinned_at and pipe.publisher.publish_pinned >= 2


def test_a_form_that_breaks_is_reported_and_never_stops_learning(trained, monkeypatch):
    import learnd.daemon.serving.compress as compress

    def broken(*_):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(compress, "_quantize_dynamic", broken)
    monkeypatch.setattr(compress, "_quantize_torchao", broken)
    draft, X, y = trained
    served, rows = select_form(draft, X, y, CompressionConfig(forms=("int8",)))
    by = {r["name"]: r for r in rows}
    assert by["int8"]["outcome"] == "unavailable"
    assert by["int8"]["reason"] == "failed: RuntimeError: kernel exploded"
    assert by["numpy"]["outcome"] == "served" and served.forward.form == "numpy-fp32"
