from __future__ import annotations

import numpy as np
import torch

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.events.synthetic import FEATURES, DriftingSEA
from learnd.daemon.learning.averaging import WARMUP, WeightAverage
from learnd.daemon.learning.learner import Learner

SEA = SchemaConfig(task="binary", features=FEATURES)


def sea_arrays(n, seed=5, noise=0.0):
    events = list(DriftingSEA(seed=seed, switch_every=1_000_000, noise=noise).take(n))
    X = np.array([[e["features"][k] for k in FEATURES] for e in events], np.float32)
    y = np.array([e["label"] for e in events], np.float32)
    return X, y


def learn(lrn, X, y):
    return np.concatenate(
        [lrn.learn_many(X[i : i + 32], y[i : i + 32]).errors for i in range(0, len(y), 32)]
    )


def flat_weights(exported):
    return np.concatenate(
        [
            np.concatenate([w.T.ravel(), b])
            for w, b in zip(exported.weights, exported.biases, strict=True)
        ]
    )


def test_the_fold_weights_follow_the_warm_up_rule_then_the_decay():
    w = torch.zeros(3)
    avg = WeightAverage(w, decay=0.8)
    expected = np.zeros(3)
    for n in range(1, 120):
        w += 1.0
        d = min(0.8, (1 + n) / (WARMUP + n))
        np.testing.assert_allclose(
            avg.current(w).numpy(), d * expected + (1 - d) * w.numpy(), rtol=1e-6
        )
        avg.fold(w)
        expected = d * expected + (1 - d) * w.numpy()
        np.testing.assert_allclose(avg.buffer.numpy(), expected, rtol=1e-6)
    assert avg.folds == 119
    avg.reset(w)
    assert avg.folds == 0 and torch.equal(avg.buffer, w)


def test_predictions_and_the_served_copy_come_from_the_average_of_the_weights():
    X, y = sea_arrays(3000)
    lrn = Learner(SEA, ModelConfig(), LearningConfig(), "cpu")
    learn(lrn, X, y)
    served = flat_weights(lrn.export())
    newest = lrn._flat.detach().numpy()
    np.testing.assert_allclose(served, lrn.average.current(lrn._flat).numpy(), rtol=1e-6)
    assert np.abs(served - newest).max() > 1e-3  # not the weights being trained
    # The next batch is predicted by the same average the export held (learn_many first adds
    # the batch to the input scaler, so predict with it added too).
    scaler = lrn.x_scaler.state_dict()
    lrn.x_scaler.update_many(X[:32])
    before = lrn.predict_many(X[:32])
    lrn.x_scaler.load_state_dict(scaler)
    np.testing.assert_array_equal(lrn.learn_many(X[:32], y[:32]).outputs, before)


def test_decay_zero_predicts_and_serves_the_newest_weights():
    X, y = sea_arrays(3000)
    lrn = Learner(SEA, ModelConfig(), LearningConfig(average_decay=0.0), "cpu")
    learn(lrn, X, y)
    np.testing.assert_array_equal(flat_weights(lrn.export()), lrn._flat.detach().numpy())
    xb = torch.from_numpy(lrn.x_scaler.transform(X[:32]))
    with torch.no_grad():
        raw = torch.sigmoid(lrn.net(xb)[:, 0]).numpy()
    np.testing.assert_array_equal(lrn.predict_many(X[:32])[:, 1], raw)


def test_the_average_restarts_at_a_drift_alarm_a_rollback_and_an_old_checkpoint():
    X, y = sea_arrays(3000)
    for restart in ("on_drift", "rollback", "old checkpoint"):
        lrn = Learner(SEA, ModelConfig(), LearningConfig(), "cpu")
        learn(lrn, X, y)
        if restart == "on_drift":
            lrn.on_drift()
        elif restart == "rollback":
            lrn.rollback()
        else:
            state = lrn.state_dict()
            del state["average"]  # written before averaging existed
            lrn = Learner(SEA, ModelConfig(seed=7), LearningConfig(), "cpu")
            lrn.load_state_dict(state)
        assert lrn.average.folds == 0, restart
        np.testing.assert_array_equal(flat_weights(lrn.export()), lrn._flat.detach().numpy())


def test_a_checkpoint_written_with_averaging_off_starts_an_average_from_its_weights():
    X, y = sea_arrays(3000)
    off = Learner(SEA, ModelConfig(), LearningConfig(average_decay=0.0), "cpu")
    learn(off, X, y)
    on = Learner(SEA, ModelConfig(seed=7), LearningConfig(), "cpu")
    on.load_state_dict(off.state_dict())
    assert on.average.folds == 0
    np.testing.assert_array_equal(flat_weights(on.export()), off._flat.detach().numpy())


def test_the_average_predicts_better_than_the_newest_weights_on_noisy_labels():
    for noise in (0.1, 0.2):
        X, y = sea_arrays(20_000, noise=noise)
        acc = {}
        for decay in (0.0, 0.8):
            lrn = Learner(SEA, ModelConfig(), LearningConfig(average_decay=decay), "cpu")
            acc[decay] = 1 - learn(lrn, X, y)[-10_000:].mean()
        assert acc[0.8] > acc[0.0], (noise, acc)
