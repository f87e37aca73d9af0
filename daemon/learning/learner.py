"""Test-then-train learning on micro-batches with a torch model.

Each batch is predicted *before* its labels are used, by the model that is served: the moving
average of the weights (daemon/learning/averaging.py), one forward pass. A second pass with the trained
weights gives the gradients (written out in daemon/learning/backprop.py, no autograd graph). With
averaging off, that one pass serves both halves.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
>>> lrn = Learner(SchemaConfig(task="binary", n_features=2), ModelConfig(hidden=(8,)),
...               LearningConfig(lr=0.05), device="cpu")
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(4000, 2)).astype(np.float32)
>>> y = (X[:, 0] > 0).astype(np.float32)
>>> errs = [lrn.learn_many(X[i:i + 32], y[i:i + 32]).errors.mean() for i in range(0, 4000, 32)]
>>> float(np.mean(errs[:10])) > float(np.mean(errs[-10:]))
True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.learning.averaging import WeightAverage
from learnd.daemon.learning.backprop import Backprop
from learnd.daemon.learning.device import resolve_device
from learnd.daemon.learning.embeddings import Embeddings
from learnd.daemon.learning.linear_member import load_member, make_member, member_state, served_step
from learnd.daemon.learning.model import build_model, count_parameters, share_one_buffer, views_like
from learnd.daemon.learning.normalizer import Standardizer
from learnd.daemon.learning.optim_step import FusedAdamStep, on_cpu
from learnd.daemon.learning.replay_window import ReplayWindow
from learnd.daemon.learning.schedules import DriftBoost
from learnd.daemon.learning.selection import MemberSelection
from learnd.daemon.learning.typed_learning import (
    learn_typed,
    make_embeddings,
    rows_step,
    rows_sum,
    typed_export,
    typed_inputs,
)
from learnd.daemon.serving.weights import DenseWeights


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one test-then-train step saw: outputs and errors are from *before* the update."""

    outputs: np.ndarray  # class probabilities (n, k) or regression values (n,)
    errors: np.ndarray  # 0/1 misclassification, or absolute error, per example
    loss: float
    applied: bool  # False when the step was skipped because the loss was not finite


def _make_optimizer(name: str, params, lr: float, weight_decay: float, device: torch.device):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    # The fused kernel is ~3x cheaper per step on CPU and CUDA; fall back where a build lacks it.
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return cls(params, lr=lr, weight_decay=weight_decay)


class Learner:
    """A torch model, its optimizer, learning-rate policy and online input standardisation."""

    def __init__(
        self,
        schema: SchemaConfig,
        model_cfg: ModelConfig,
        learning: LearningConfig,
        device: str | torch.device = "cpu",
    ):
        self.schema = schema
        self.model_cfg = model_cfg
        self.learning = learning
        layout = schema.layout
        # Typed features: the numbers are the network's inputs, the categories rows of a table
        # added to the first layer's outputs (daemon/learning/embeddings.py).
        self.n_inputs = layout.n_numeric if layout is not None else schema.dim
        net = build_model(model_cfg, self.n_inputs, schema.n_outputs)
        if isinstance(device, str):
            device = resolve_device(device, count_parameters(net))
        self.device = device
        self.task = schema.task
        self.net = net.to(self.device)
        # Loading a state copies into these same tensors, so the list stays valid.
        self._params: list[torch.Tensor] = list(self.net.parameters())
        self._flat = share_one_buffer(self._params)  # the weights, all in one tensor
        # What predicts and is served: an average of the weights (daemon/learning/averaging.py), and
        # its layers as views laid out like the parameters.
        self.average = WeightAverage(self._flat, learning.average_decay)
        self._avg_params = views_like(self.average.buffer, self._params)
        self._now_params = views_like(self.average.now, self._params)
        self.optimizer = _make_optimizer(
            learning.optimizer, self._params, learning.lr, learning.weight_decay, self.device
        )
        # Forward and backward passes without autograd, gradients in one buffer too, so that
        # the optimizer steps the whole model as one tensor (daemon/learning/backprop.py).
        self._backprop = Backprop(self.net, self.task)
        self._fast = FusedAdamStep(self.optimizer, self._flat, self._backprop.grad)
        self.schedule = DriftBoost(
            learning.lr, learning.drift.lr_boost, learning.drift.boost_half_life_steps
        )
        self.typed: Embeddings | None = make_embeddings(self, layout) if layout else None
        self._idx: np.ndarray | None = None  # the table rows of the batch being learned
        self.x_scaler = Standardizer(self.n_inputs)
        self.y_scaler = Standardizer(1)
        # Recently learned examples, rehearsed by replay() (see daemon/learning/replay_window.py).
        self.window = ReplayWindow(learning.replay.window, schema.dim, seed=model_cfg.seed)
        self.steps = 0
        self.replay_steps = 0
        self.skipped_steps = 0
        self.events_learned = 0
        self.rollbacks = 0
        self.bad_steps = 0
        self._loss_avg: float | None = None
        self._last_good: dict | None = None
        self._last_good_step = -1
        self._probe: nn.Module | None = None  # the last good weights, to judge a loss spike
        # A linear model learned beside an MLP on the same batches (daemon/learning/linear_member.py).
        self.member: Learner | None = make_member(self, Learner)
        lm = learning.linear_member
        self.selection = MemberSelection(lm.half_life_events, lm.margin, lm.min_events)
        losses = {"binary": nn.BCEWithLogitsLoss, "multiclass": nn.CrossEntropyLoss}
        self._loss: nn.Module = losses.get(self.task, nn.MSELoss)()

    @property
    def lr(self) -> float:
        return self.schedule.get(self.steps)

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.net)

    @property
    def flat_weights(self) -> torch.Tensor:
        """The one buffer every weight is a view of (written in place by a parameter round,
        daemon/learning/state_vector.py)."""
        return self._flat

    @property
    def serving(self) -> Learner:
        """The member that predicts and is exported now: this learner's MLP, or its linear
        member while that has the lower recent error."""
        if self.member is not None and self.selection.chosen == 1:
            return self.member
        return self

    def _target(self, y: np.ndarray) -> torch.Tensor:
        if self.task == "multiclass":
            return torch.from_numpy(np.ascontiguousarray(y, np.int64)).to(self.device)
        if self.task == "regression":
            y = (y - self.y_scaler.mean[0]) / math.sqrt(self.y_scaler.var[0] + 1e-8)
        t = torch.from_numpy(np.ascontiguousarray(y, np.float32)).to(self.device)
        return t.unsqueeze(1)

    def _outputs(self, raw: torch.Tensor) -> np.ndarray:
        raw = raw.detach()
        if self.task == "binary":
            p = torch.sigmoid(raw[:, 0]).cpu().numpy()
            out = np.empty((len(p), 2), np.float32)
            out[:, 1] = p
            np.subtract(1.0, p, out=out[:, 0])
            return out
        if self.task == "multiclass":
            return torch.softmax(raw, dim=1).cpu().numpy()
        scale = math.sqrt(self.y_scaler.var[0] + 1e-8)
        return raw[:, 0].cpu().numpy() * scale + self.y_scaler.mean[0]

    def _errors(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return np.abs(outputs - y).astype(np.float64)
        return (outputs.argmax(axis=1) != y.astype(np.int64)).astype(np.float64)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> StepResult:
        """Predict the batch with the served model (the average of the weights, or the weights
        with averaging off), then take one optimizer step on it.

        A batch holding a non-finite value (validation keeps them out) changes nothing: its
        outputs come from the current model and the step is counted as skipped.
        """
        scalers = (self.x_scaler.state_dict(), self.y_scaler.state_dict())
        try:
            own = self._learn_many(X, y)
        except BaseException:
            # A failed step must not leave the batch half-applied: undo the scaler updates.
            self.x_scaler.load_state_dict(scalers[0])
            self.y_scaler.load_state_dict(scalers[1])
            raise
        if self.member is None:
            return own
        return StepResult(*served_step(self, own, X, y))

    def _learn_many(self, X: np.ndarray, y: np.ndarray) -> StepResult:
        if self.typed is not None:
            return StepResult(*learn_typed(self, X, y))
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            outputs = self.predict_own(np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0))
            self.skipped_steps += 1
            self.events_learned += len(y)
            errors = np.where(np.isfinite(y), self._errors(outputs, np.nan_to_num(y)), np.nan)
            return StepResult(outputs, errors, float("nan"), False)
        self.x_scaler.update_many(X)
        if self.task == "regression":
            self.y_scaler.update_many(np.asarray(y, np.float64).reshape(-1, 1))
        xb = torch.from_numpy(self.x_scaler.transform(X)).to(self.device)
        target = self._target(y)
        bp = self._backprop
        self.average.fold(self._flat)  # the steps since the last batch, before predicting
        raw, loss = bp.loss(xb, target)
        outputs = self._outputs(bp.forward(xb, self._avg_params) if self.average.enabled else raw)
        loss_value = float(loss)
        applied = math.isfinite(loss_value)
        if applied:
            lr = self.lr
            bp.backward(target)
            self._fast.step(lr)
            self.steps += 1
            for _ in range(self.learning.steps_per_batch - 1):  # more steps on the same batch
                if not math.isfinite(float(bp.loss(xb, target)[1])):
                    break
                bp.backward(target)
                self._fast.step(lr)
                self.steps += 1
        else:
            self.skipped_steps += 1
        self.events_learned += len(y)
        if self._guard(loss_value, xb, target) and applied:
            self.window.add(X, y)
        return StepResult(outputs, self._errors(outputs, y), loss_value, applied)

    def rehearsal_steps(self) -> int:
        """Rehearsal steps per batch now: ``refill_steps_per_batch`` while the replay window is
        refilling (from the start, and after a drift alarm or a rollback empties it: a young
        model, or one facing a new concept, gains most from passes over what it has seen),
        ``steps_per_batch`` once it is full."""
        rp = self.learning.replay
        return rp.refill_steps_per_batch if self.refilling else rp.steps_per_batch

    @property
    def refilling(self) -> bool:
        """Whether the replay window is refilling: from the start, and after a drift alarm or
        a rollback emptied it."""
        return len(self.window) < self.window.capacity

    def replay(self, steps: int | None = None) -> int:
        """Take up to ``steps`` (default: :meth:`rehearsal_steps`) optimizer steps on batches
        drawn from the replay window (events already learned: nothing is predicted or counted
        as learned, the scalers stay). Returns the steps taken; a non-finite loss ends the
        round, non-finite weights roll back."""
        if steps is None:
            steps = self.rehearsal_steps()
        if self.member is not None:
            self.member.replay(steps)
        if steps <= 0 or len(self.window) < 2:
            return 0
        n = self.learning.batch_size
        taken = 0
        bp = self._backprop
        # One draw for the whole round: the same rows as one draw of n per step (the window and
        # the scalers do not change during it), standardised and moved in one go.
        X, y = self.window.sample(n * steps)
        idx = None
        if self.typed is not None:
            X, idx = typed_inputs(self, X, add=False)  # the rows were learned before
        xs = torch.from_numpy(self.x_scaler.transform(X)).to(self.device)
        targets = self._target(y)
        for i in range(steps):
            target = targets[i * n : (i + 1) * n]
            part = idx[i * n : (i + 1) * n] if idx is not None else None
            _, loss = bp.loss(xs[i * n : (i + 1) * n], target, rows_sum(self, part))
            if not math.isfinite(float(loss)):
                break
            bp.backward(target)
            self._fast.step(self.lr)
            rows_step(self, part, self.lr)
            taken += 1
        self.replay_steps += taken
        if taken and not self.is_finite():
            self.rollback()
        return taken

    def _guard(self, loss: float, xb: torch.Tensor, target: torch.Tensor) -> bool:
        """Count bad steps; roll back to the last good state when they persist. True when the
        step was good.

        A loss far above its running average is a bad step only when the last good state does
        much better on the same batch: when it does as badly, the data changed (an abrupt
        concept drift, met by a model confident in the old concept), not the weights, and
        rolling back would only throw away what was learned since the change.
        """
        weights_ok = self.is_finite()
        exploded = (
            self._loss_avg is not None
            and self.steps > 50
            and loss > self.learning.loss_explosion_factor * max(self._loss_avg, 1e-3)
            and not self._as_bad_before(loss, xb, target)
        )
        if not weights_ok or not math.isfinite(loss) or exploded:
            self.bad_steps += 1
            if not weights_ok or self.bad_steps >= self.learning.rollback_after_bad_steps:
                self.rollback()
            return False
        self.bad_steps = 0
        self._loss_avg = loss if self._loss_avg is None else 0.98 * self._loss_avg + 0.02 * loss
        every = self.learning.good_state_every_steps
        # The first good state is kept as soon as losses are judged (after 50 steps), so that
        # a spike is never judged against, or rolled back to, the untrained initial weights.
        if self.steps - self._last_good_step >= every or (
            self._last_good is None and self.steps > 50
        ):
            self._last_good = self._model_state()
            self._last_good_step = self.steps
        return True

    @torch.no_grad()
    def _as_bad_before(self, loss: float, xb: torch.Tensor, target: torch.Tensor) -> bool:
        """Whether the last good state's loss on this batch is at least half of ``loss``."""
        if self._last_good is None:
            return False
        if self._probe is None:
            self._probe = build_model(self.model_cfg, self.n_inputs, self.schema.n_outputs)
            self._probe.to(self.device)
        self._probe.load_state_dict(self._last_good["model"])
        if self.typed is not None:  # the table is not part of the good state: as it is now
            first = rows_sum(self, self._idx)
            raw = self._backprop.forward(xb, list(self._probe.parameters()), first)
            return 2 * float(self._loss(raw, target)) >= loss
        before = float(self._loss(self._probe(xb), target))
        return 2 * before >= loss

    def _model_state(self) -> dict:
        return {
            "model": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "loss_avg": self._loss_avg,
        }

    def rollback(self) -> None:
        """Return weights and optimizer to the last good state (or to the initial weights)."""
        if self._last_good is None:
            fresh = build_model(self.model_cfg, self.n_inputs, self.schema.n_outputs)
            self.net.load_state_dict(fresh.state_dict())
            self.optimizer.state.clear()
        else:
            self.net.load_state_dict(self._last_good["model"])
            self.optimizer.load_state_dict(copy.deepcopy(self._last_good["optimizer"]))
            self._loss_avg = self._last_good["loss_avg"]
        self.average.reset(self._flat)
        if self.typed is not None:  # the table keeps its rows, less any non-finite ones
            self.typed.repair()
            self.typed.reset_average()
        self.rollbacks += 1
        self.bad_steps = 0
        self.window.clear()  # it may hold what broke the model

    @torch.inference_mode()
    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Outputs of the model served: the average of the weights (or the weights, with
        averaging off) of the member serving (:attr:`serving`)."""
        if self.serving is not self:
            return self.serving.predict_many(X)
        return self.predict_own(X)

    @torch.inference_mode()
    def predict_own(self, X: np.ndarray) -> np.ndarray:
        """Outputs of this learner's own network, whichever member serves."""
        first = None
        if self.typed is not None:
            X, idx = typed_inputs(self, X, add=False)
            first = rows_sum(self, idx, "now")
        xb = torch.from_numpy(self.x_scaler.transform(X)).to(self.device)
        self.average.current(self._flat)
        return self._outputs(self._backprop.forward(xb, self._now_params, first))

    def on_drift(self) -> None:
        """React to a concept-drift alarm: boost the learning rate; optionally forget moments."""
        self.schedule.on_drift(self.steps)
        self.window.clear()  # the old concept is not to be rehearsed
        self.average.reset(self._flat)  # nor averaged into the weights served
        if self.typed is not None:
            self.typed.reset_average(moments=self.learning.drift.reset_optimizer)
        if self.learning.drift.reset_optimizer:
            self.optimizer.state.clear()
        if self.member is not None:
            self.member.on_drift()

    def adopt(self, other: Learner) -> None:
        """Take ``other``'s model: weights, optimizer moments and input standardisation (a
        promoted challenger). Counters stay this learner's, its learning-rate policy ends any
        boost, and the adopted state is the new rollback target."""
        state = other.state_dict()  # copies: nothing is shared with ``other``
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.average.load_state_dict(state["average"], self._flat)
        self.x_scaler.load_state_dict(state["x_scaler"])
        self.y_scaler.load_state_dict(state["y_scaler"])
        self.window.load_state_dict(state["window"])  # the new concept's recent events
        if self.typed is not None:
            self.typed.load_state_dict(state["embeddings"])
        if self.member is not None and other.member is not None:
            self.member.adopt(other.member)
            self.selection.load_state_dict(other.selection.state_dict())
        # A boost from the alarm was meant for the old weights; with it, the adopted ones did
        # worse (on the stream of tests/unit/test_challenger.py: rolling accuracy 0.947 at the
        # end with the boost kept, 0.972 without).
        self.schedule.reset()
        self._loss_avg = other._loss_avg
        self.bad_steps = 0
        self._last_good = self._model_state()
        self._last_good_step = self.steps

    def export(self) -> DenseWeights:
        """A detached copy for serving (of the average of the weights, with averaging on):
        never the tensors being trained. Of the member serving (:attr:`serving`)."""
        if self.serving is not self:
            return self.serving.export()
        self.average.current(self._flat)
        params = self._now_params
        mean, inv = self.x_scaler.scale()
        y_std = math.sqrt(self.y_scaler.var[0] + 1e-8) if self.task == "regression" else 1.0
        if self.typed is not None:
            return typed_export(self, params, mean, inv, y_std)
        return DenseWeights(
            weights=tuple(w.detach().cpu().numpy().T.copy() for w in params[0::2]),
            biases=tuple(b.detach().cpu().numpy().copy() for b in params[1::2]),
            activation=self.model_cfg.activation,
            x_mean=mean,
            x_inv_std=inv,
            y_mean=float(self.y_scaler.mean[0]) if self.task == "regression" else 0.0,
            y_std=y_std,
        )

    def is_finite(self) -> bool:
        """Every weight finite: one sum over the buffer holding them all and one device sync.
        A NaN or Inf makes the sum non-finite (so do weights summing beyond ~3e38, which
        overflows float32: a model that far gone has exploded as surely)."""
        dense = math.isfinite(float(self._flat.detach().sum()))
        own = dense and (self.typed is None or self.typed.is_finite())
        return own and (self.member is None or self.member.is_finite())

    def state_dict(self) -> dict:
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            # state_dict() references the live moment tensors: copy (to the CPU, so that a
            # checkpoint written on a GPU loads anywhere), or a caller holding this dict would
            # see it change under it (and a learner loading it would share them).
            "optimizer": on_cpu(self.optimizer.state_dict()),
            "average": self.average.state_dict(),
            "schedule": self.schedule.state_dict(),
            "x_scaler": self.x_scaler.state_dict(),
            "y_scaler": self.y_scaler.state_dict(),
            "window": self.window.state_dict(),
            "steps": self.steps,
            "replay_steps": self.replay_steps,
            "skipped_steps": self.skipped_steps,
            "events_learned": self.events_learned,
            "rollbacks": self.rollbacks,
            **({"embeddings": self.typed.state_dict()} if self.typed is not None else {}),
            **member_state(self),
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # "average" and "window" are absent in older checkpoints: those start afresh.
        self.average.load_state_dict(state.get("average"), self._flat)
        self.schedule.load_state_dict(state["schedule"])
        self.x_scaler.load_state_dict(state["x_scaler"])
        self.y_scaler.load_state_dict(state["y_scaler"])
        self.window.load_state_dict(state.get("window"))
        self.steps = int(state["steps"])
        self.replay_steps = int(state.get("replay_steps", 0))
        self.skipped_steps = int(state["skipped_steps"])
        self.events_learned = int(state["events_learned"])
        self.rollbacks = int(state.get("rollbacks", 0))
        if self.typed is not None:
            self.typed.load_state_dict(state["embeddings"])
        if self.member is not None:
            load_member(self, state)
