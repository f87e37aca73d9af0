from __future__ import annotations

import numpy as np
import pytest
import torch

from learnd.daemon.config import DriftConfig, LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.errors import StartupError
from learnd.daemon.events.synthetic import FEATURES, DriftingSEA
from learnd.daemon.learning.learner import Learner, resolve_device
from learnd.daemon.serving.snapshot import Draft, SnapshotRef

SEA = SchemaConfig(task="binary", features=FEATURES)


def sea_arrays(n, seed=1, switch_every=100_000):
    events = list(DriftingSEA(seed=seed, switch_every=switch_every).take(n))
    X = np.array([[e["features"][k] for k in FEATURES] for e in events], np.float32)
    y = np.array([e["label"] for e in events], np.float32)
    return X, y


def learn(learner, X, y, bs=32):
    return [learner.learn_many(X[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]


def test_learns_sea_to_high_prequential_accuracy(device):
    X, y = sea_arrays(20_000)
    lrn = Learner(SEA, ModelConfig(), LearningConfig(), device)
    results = learn(lrn, X, y)
    errs = np.concatenate([r.errors for r in results])
    assert errs[:1000].mean() > errs[-5000:].mean()
    assert 1 - errs[-5000:].mean() > 0.9
    assert lrn.events_learned == 20_000 and lrn.steps == 625


def test_outputs_are_predictions_made_before_the_update(device):
    X, y = sea_arrays(64)
    lrn = Learner(SEA, ModelConfig(), LearningConfig(), device)
    lrn.x_scaler.update_many(X[:32])
    before = lrn.predict_many(X[:32])
    lrn.x_scaler = type(lrn.x_scaler)(3)  # learn_many updates the scaler itself
    res = lrn.learn_many(X[:32], y[:32])
    np.testing.assert_allclose(res.outputs, before, rtol=1e-5, atol=1e-6)
    assert not np.allclose(lrn.predict_many(X[:32]), before)


def test_state_dict_round_trip_continues_identically(device):
    X, y = sea_arrays(6_000)
    a = Learner(SEA, ModelConfig(), LearningConfig(), device)
    learn(a, X[:3000], y[:3000])
    a.on_drift()
    b = Learner(SEA, ModelConfig(seed=99), LearningConfig(), device)
    b.load_state_dict(a.state_dict())
    ra, rb = learn(a, X[3000:], y[3000:]), learn(b, X[3000:], y[3000:])
    for x, z in zip(ra, rb, strict=True):
        np.testing.assert_array_equal(x.outputs, z.outputs)
    for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.lr == b.lr and a.steps == b.steps


def test_non_finite_loss_skips_the_step(device):
    lrn = Learner(
        SchemaConfig(task="regression", n_features=1), ModelConfig(), LearningConfig(), device
    )
    X = np.ones((4, 1), np.float32)
    lrn.learn_many(X, np.ones(4, np.float32))
    before = [p.clone() for p in lrn.net.parameters()]
    res = lrn.learn_many(X, np.array([1, 2, np.inf, 4], np.float32))
    assert not res.applied and lrn.skipped_steps == 1 and lrn.steps == 1
    assert all(torch.equal(p, q) for p, q in zip(before, lrn.net.parameters(), strict=True))


@pytest.mark.parametrize("task,classes", [("multiclass", ("a", "b", "c")), ("regression", None)])
def test_other_tasks_learn(task, classes, device):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6000, 2)).astype(np.float32)
    if task == "multiclass":
        y = np.digitize(X[:, 0], [-0.5, 0.5]).astype(np.int64)
    else:
        y = (3 * X[:, 0] - X[:, 1] + 10).astype(np.float32)
    lrn = Learner(
        SchemaConfig(task=task, n_features=2, classes=classes),
        ModelConfig(),
        LearningConfig(lr=0.01),
        device,
    )
    errs = np.concatenate([r.errors for r in learn(lrn, X, y)])
    assert errs[-1000:].mean() < errs[:200].mean() / 2


def test_snapshot_forward_matches_torch_and_is_a_copy(device):
    X, y = sea_arrays(3000)
    lrn = Learner(SEA, ModelConfig(), LearningConfig(), device)
    learn(lrn, X, y)
    snap = SnapshotRef().publish(Draft("binary", (0, 1), FEATURES, lrn.export(), 3000, {}))
    np.testing.assert_allclose(snap.predict_many(X[:100]), lrn.predict_many(X[:100]), atol=1e-5)
    frozen = snap.predict_many(X[:100]).copy()
    learn(lrn, X, y)  # more training must not touch the served copy
    np.testing.assert_array_equal(snap.predict_many(X[:100]), frozen)
    assert not snap.forward.weights[0].flags.writeable


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto", n_parameters=4481).type == "cpu"  # too small to gain


def test_auto_device_takes_the_gpu_only_for_models_big_enough(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", n_parameters=4_481).type == "cpu"
    assert resolve_device("auto", n_parameters=265_000).type == "cuda"
    assert resolve_device("cuda", n_parameters=10).type == "cuda"  # explicit wins
    if not torch.cuda.is_available():
        with pytest.raises(StartupError, match="learning.device is 'cuda'"):
            resolve_device("cuda")


def test_optimizer_choices_and_fused_adam(device):
    for name in ("adam", "adamw", "sgd", "adagrad"):
        lrn = Learner(SEA, ModelConfig(kind="linear"), LearningConfig(optimizer=name), device)
        assert len(list(lrn.net.parameters())) == 2
    lrn = Learner(SEA, ModelConfig(), LearningConfig(optimizer="adam"), device)
    assert lrn.optimizer.defaults.get("fused") is True


def test_a_checkpoint_moves_between_devices(device):
    """State written by a learner on one device loads on the CPU (and back) and predicts alike."""
    X, y = sea_arrays(4_000)
    a = Learner(SEA, ModelConfig(), LearningConfig(), device)
    learn(a, X[:3000], y[:3000])
    state = a.state_dict()
    tensors = [v for v in state["model"].values()] + [
        t for s in state["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)
    ]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    cpu = Learner(SEA, ModelConfig(seed=5), LearningConfig(), "cpu")
    cpu.load_state_dict(state)
    np.testing.assert_allclose(cpu.predict_many(X[3000:]), a.predict_many(X[3000:]), atol=1e-5)
    back = Learner(SEA, ModelConfig(seed=6), LearningConfig(), device)
    back.load_state_dict(cpu.state_dict())
    ra, rb = learn(a, X[3000:], y[3000:]), learn(back, X[3000:], y[3000:])
    np.testing.assert_allclose(ra[-1].outputs, rb[-1].outputs, atol=1e-4)


def test_several_steps_per_batch_predict_first_then_step_k_times(device):
    X, y = sea_arrays(3200)
    one = Learner(SEA, ModelConfig(), LearningConfig(), device)
    two = Learner(SEA, ModelConfig(), LearningConfig(steps_per_batch=2), device)
    r1, r2 = learn(one, X[:32], y[:32]), learn(two, X[:32], y[:32])
    np.testing.assert_allclose(r1[0].outputs, r2[0].outputs, atol=1e-6)  # same test half
    assert (one.steps, two.steps) == (1, 2)
    learn(one, X[32:], y[32:])
    learn(two, X[32:], y[32:])
    assert two.steps == 2 * one.steps == 200


def assert_same_weights_and_moments(fast, slow):
    for a, b in zip(fast.net.parameters(), slow.net.parameters(), strict=True):
        assert torch.equal(a, b)
    fs, ss = fast.optimizer.state_dict()["state"], slow.optimizer.state_dict()["state"]
    for k in ss:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(fs[k][name], ss[k][name]), (k, name)


@pytest.mark.parametrize(
    "optimizer, weight_decay", [("adam", 0.0), ("adam", 0.01), ("adamw", 0.01)]
)
def test_the_fused_kernel_step_equals_adam_step_bit_for_bit(optimizer, weight_decay, device):
    """FusedAdamStep calls Adam's own kernel directly: weights and moments must stay exactly
    what ``optimizer.step()`` gives, through a drift boost and a checkpoint restore."""
    X, y = sea_arrays(3_200)
    cfg = LearningConfig(optimizer=optimizer, weight_decay=weight_decay, steps_per_batch=2)
    fast = Learner(SEA, ModelConfig(), cfg, device)
    slow = Learner(SEA, ModelConfig(), cfg, device)
    slow._fast.enabled = False
    for lrn in (fast, slow):
        learn(lrn, X[:1600], y[:1600])
        lrn.on_drift()
        lrn.load_state_dict(lrn.state_dict())
        learn(lrn, X[1600:], y[1600:])
    assert fast._fast.enabled and fast._fast.kernel_steps == 2 * 100 - 1
    # one kernel call over the whole model, except Adam's L2 decay on CUDA (daemon/learning/optim_step.py)
    assert fast._fast.flat == (device == "cpu" or optimizer == "adamw" or weight_decay == 0)
    assert slow._fast.kernel_steps == 0
    assert_same_weights_and_moments(fast, slow)


def test_the_one_tensor_step_follows_every_replacement_of_the_optimizer_state(device):
    """The moments are moved into flat buffers once; a cleared state (reset at an alarm), a
    rollback, an adopted challenger and a checkpoint load each replace them, and the next step
    must move the new ones in, not step stale copies: weights stay equal to ``step()``'s."""
    X, y = sea_arrays(6_400)
    cfg = LearningConfig(drift=DriftConfig(reset_optimizer=True))
    fast = Learner(SEA, ModelConfig(), cfg, device)
    slow = Learner(SEA, ModelConfig(), cfg, device)
    slow._fast.enabled = False
    donor = Learner(SEA, ModelConfig(seed=3), cfg, device)
    learn(donor, X[:1600], y[:1600])
    for lrn in (fast, slow):
        learn(lrn, X[:1600], y[:1600])
        lrn.on_drift()  # clears the optimizer state
        learn(lrn, X[1600:3200], y[1600:3200])
        lrn.rollback()  # loads the last good state's moments
        learn(lrn, X[3200:4000], y[3200:4000])
        lrn.adopt(donor)  # another learner's moments
        learn(lrn, X[4000:4800], y[4000:4800])
        lrn.load_state_dict(lrn.state_dict())
        learn(lrn, X[4800:], y[4800:])
    assert fast._fast.flat and fast.rollbacks == slow.rollbacks == 1
    assert_same_weights_and_moments(fast, slow)
    # and the optimizer's state tensors are the flat buffers' views the kernel stepped
    exp_avg = fast._fast._moments[0]
    for p in fast.net.parameters():
        m = fast.optimizer.state[p]["exp_avg"]
        assert m.untyped_storage().data_ptr() == exp_avg.untyped_storage().data_ptr()


def test_is_finite_sees_a_bad_weight_in_any_parameter_also_after_a_state_load(device):
    lrn = Learner(SEA, ModelConfig(), LearningConfig(), device)
    X, y = sea_arrays(320)
    learn(lrn, X, y)  # the optimizer has written into the weights
    assert lrn.is_finite()
    good = lrn.state_dict()
    for i, name in enumerate(good["model"]):
        for bad in (float("nan"), float("inf"), float("-inf")):
            state = {**good, "model": dict(good["model"])}
            t = state["model"][name].clone()
            t.view(-1)[-1] = bad
            state["model"][name] = t
            lrn.load_state_dict(state)  # copies into the same tensors
            assert not lrn.is_finite(), (name, bad)
            lrn.load_state_dict(good)
            assert lrn.is_finite()
        with torch.no_grad():  # an in-place write, as an exploding optimizer step makes
            list(lrn.net.parameters())[i].view(-1)[0] = float("nan")
        assert not lrn.is_finite()
        lrn.load_state_dict(good)


def test_a_loss_spike_from_new_data_is_not_rolled_back_but_one_from_broken_weights_is(device):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(16_000, 3)).astype(np.float32)
    X[:, 0] += np.sign(X[:, 0])  # a wide margin: the model grows very confident
    y = (X[:, 0] > 0).astype(np.float32)
    lrn = Learner(SEA, ModelConfig(), LearningConfig(), device)
    learn(lrn, X[:12_000], y[:12_000])
    assert lrn.rollbacks == 0 and lrn._loss_avg < 0.01
    # The concept flips: the loss jumps far beyond 100x its average, but the last good state
    # does as badly on these batches, so it is the data: no rollback, the model re-learns.
    flipped = learn(lrn, X[12_000:14_000], 1 - y[12_000:14_000])
    assert flipped[0].loss > 100 * 0.01 and lrn.rollbacks == 0
    assert np.mean(flipped[-10:][0].errors) < 0.5  # it has learned the flipped concept
    # Broken weights (what an exploding step leaves): the last good state does far better on
    # the same batches, so after rollback_after_bad_steps bad steps the learner rolls back.
    with torch.no_grad():
        list(lrn.net.parameters())[-2].mul_(-1000.0)
    learn(lrn, X[14_000:14_160], 1 - y[14_000:14_160])
    assert lrn.rollbacks == 1
