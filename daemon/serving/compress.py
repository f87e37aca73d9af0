"""Smaller or faster copies of the model, each a candidate :mod:`learnd.daemon.serving.forms` form.

Every function here works on a *copy* built from :class:`learnd.daemon.learning.learner.DenseWeights` (the
learner's exported float32 arrays), so the weights being trained and the weights served are
never the same tensors. Which form is served is decided by measurement and by the gate
(:mod:`learnd.daemon.pipeline`): a form must score within the compression tolerance of the plain copy
on fresh events, and among those the fastest at batch 1 wins.

Forms
-----
``numpy``          the plain copy, dense float32, evaluated with numpy (always a candidate)
``torch``          the plain copy as a torch fp32 module (the reference the others are timed against)
``prune``          global unstructured magnitude pruning (``torch.nn.utils.prune``), made permanent
``prune-units``    structured pruning: the hidden units with the smallest L2 norm are removed and
                   the layers really shrink
``int8``           int8 weights: ``torch.ao.quantization.quantize_dynamic`` on the CPU (deprecated
                   in torch; its warnings are caught here and the form reports itself unavailable
                   once torch removes it); torchao's weight-only int8 on CUDA where it works
``fp16``/``bf16``  half precision on CUDA

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.serving.weights import DenseWeights
>>> rng = np.random.default_rng(0)
>>> w = DenseWeights((rng.normal(size=(4, 8)).astype(np.float32),
...                   rng.normal(size=(8, 1)).astype(np.float32)),
...                  (np.zeros(8, np.float32), np.zeros(1, np.float32)), "relu",
...                  np.zeros(4, np.float32), np.ones(4, np.float32), 0.0, 1.0)
>>> [a.shape for a in prune_units(w, 0.5).weights]
[(4, 4), (4, 1)]
>>> p = prune_global(w, 0.5)  # the smallest half of all 40 weights, across both layers
>>> sum(int((a == 0).sum()) for a in p.weights)
20
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from learnd.daemon.config import CompressionConfig
from learnd.daemon.learning.model import ACTIVATIONS
from learnd.daemon.serving.forms import Forward, NumpyForward, TorchForward
from learnd.daemon.serving.gate import within
from learnd.daemon.serving.snapshot import Draft, Snapshot
from learnd.daemon.serving.weights import DenseWeights

FORMS = ("numpy", "torch", "prune", "prune-units", "int8", "fp16", "bf16")


class Unavailable(Exception):
    """This form cannot be built here (no CUDA, a torch without the kernel...)."""


def to_module(w: DenseWeights) -> nn.Sequential:
    """A float32 CPU torch copy of the dense layers (scaling excluded)."""
    layers: list[nn.Module] = []
    last = len(w.weights) - 1
    for i, (a, b) in enumerate(zip(w.weights, w.biases, strict=True)):
        lin = nn.Linear(a.shape[0], a.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(a.T)))
            lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))
        layers.append(lin)
        if i < last:
            layers.append(ACTIVATIONS[w.activation]())
    return nn.Sequential(*layers)


def _from_module(net: nn.Sequential, like: DenseWeights) -> DenseWeights:
    lins = [m for m in net if isinstance(m, nn.Linear)]
    return replace(
        like,
        weights=tuple(m.weight.detach().numpy().T.copy() for m in lins),
        biases=tuple(m.bias.detach().numpy().copy() for m in lins),
    )


def prune_module(net: nn.Sequential, amount: float) -> nn.Sequential:
    """Global magnitude pruning of ``net``'s Linear weights, in place, made permanent: the
    state-dict keys stay plain (no ``weight_orig``/``weight_mask``) and no hooks remain."""
    params = [(m, "weight") for m in net if isinstance(m, nn.Linear)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for m, name in params:
        prune.remove(m, name)
    return net


def prune_global(w: DenseWeights, amount: float) -> DenseWeights:
    """Zero the ``amount`` share of all weights with the smallest magnitude, across layers."""
    return _from_module(prune_module(to_module(w), amount), w)


def prune_units(w: DenseWeights, amount: float) -> DenseWeights:
    """Remove the ``amount`` share of each hidden layer's units, smallest incoming L2 norm
    first (``torch.nn.utils.prune.ln_structured``), and shrink the matrices to match."""
    if len(w.weights) < 2:
        raise Unavailable("a linear model has no hidden units to remove")
    net = to_module(w)
    lins = [m for m in net if isinstance(m, nn.Linear)]
    weights = [a.copy() for a in w.weights]
    biases = [b.copy() for b in w.biases]
    for i, lin in enumerate(lins[:-1]):
        n_units = lin.out_features
        if int(round(amount * n_units)) >= n_units:
            raise Unavailable(f"pruning {amount:.0%} would remove every unit of layer {i}")
        prune.ln_structured(lin, "weight", amount=amount, n=2, dim=0)
        mask: torch.Tensor = getattr(lin, "weight_mask")  # noqa: B009 - set by the pruning hook
        keep = mask.detach().numpy().any(axis=1)  # (out,) rows of the torch weight
        prune.remove(lin, "weight")
        weights[i] = weights[i][:, keep]
        biases[i] = biases[i][keep]
        weights[i + 1] = weights[i + 1][keep, :]
    return replace(w, weights=tuple(weights), biases=tuple(biases))


def _quantize_dynamic(net: nn.Module) -> nn.Module:
    quantize = getattr(getattr(torch, "ao", None), "quantization", None)
    quantize = getattr(quantize, "quantize_dynamic", None)
    if quantize is None:
        raise Unavailable("this torch has no torch.ao.quantization.quantize_dynamic")
    with warnings.catch_warnings():
        # Deprecated since torch 2.9 in favour of torchao, which has no fast eager CPU path for
        # batch-1 Linear yet; the deprecation is known and handled (Unavailable once removed).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        try:
            return quantize(net, {nn.Linear}, dtype=torch.qint8)
        except (RuntimeError, NotImplementedError) as e:  # no quantized engine in this build
            raise Unavailable(f"quantize_dynamic failed: {e}") from e


def _quantize_torchao(net: nn.Module, device: torch.device) -> nn.Module:
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as e:
        raise Unavailable("int8 on CUDA needs torchao (pip install torchao)") from e
    except Exception as e:  # noqa: BLE001 - a torchao that does not import here is just absent
        raise Unavailable(f"torchao does not import here: {type(e).__name__}: {e}") from e
    net = net.to(device)
    try:
        with warnings.catch_warnings():
            # torchao 0.15+ deprecates its version-1 tensor layouts (pytorch/ao#2752) and asks
            # for version=2, which older releases do not take: known, and handled here.
            warnings.filterwarnings("ignore", message=".*[Dd]eprecat.*", category=UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                config = Int8WeightOnlyConfig(version=2)
            except TypeError:  # a torchao before the version argument
                config = Int8WeightOnlyConfig()
            quantize_(net, config)
    except Exception as e:  # noqa: BLE001 - e.g. a torchao built for another torch
        raise Unavailable(f"torchao quantize_ failed: {type(e).__name__}: {e}") from e
    return net


def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise Unavailable("needs a CUDA device")
    return torch.device("cuda")


def build_form(name: str, w: DenseWeights, prune_amount: float, units_amount: float) -> Forward:
    """Build form ``name`` of ``w``; raises :class:`Unavailable` where it cannot run."""
    if name == "numpy":
        return NumpyForward(w.weights, w.biases, w.activation)
    if name == "prune":
        p = prune_global(w, prune_amount)
        return NumpyForward(p.weights, p.biases, p.activation, form=f"numpy-pruned{prune_amount:g}")
    if name == "prune-units":
        p = prune_units(w, units_amount)
        return NumpyForward(p.weights, p.biases, p.activation, form=f"numpy-units{units_amount:g}")
    return build_torch_form(name, w)


def build_torch_form(name: str, w: DenseWeights) -> TorchForward:
    """Torch form ``name`` of ``w``, carrying its recipe (so a serving process can rebuild it)."""
    forward = _torch_form(name, w)
    forward.recipe, forward.source = name, w
    return forward


def _torch_form(name: str, w: DenseWeights) -> TorchForward:
    cpu = torch.device("cpu")
    if name == "torch":
        return TorchForward(to_module(w), cpu, torch.float32, "torch-fp32")
    if name == "int8":
        # torchao's weight-only int8 on the GPU where it works; otherwise the CPU's
        # quantize_dynamic, also on a GPU machine without a working torchao.
        gpu_reason = ""
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            try:
                net = _quantize_torchao(to_module(w), dev)
                return TorchForward(net, dev, torch.float32, "cuda-int8")
            except Unavailable as e:
                gpu_reason = f"{e}; "
        try:
            net = _quantize_dynamic(to_module(w))
        except Unavailable as e:
            raise Unavailable(f"{gpu_reason}{e}") from e
        return TorchForward(net, cpu, torch.float32, "torch-int8")
    if name in ("fp16", "bf16"):
        dtype = torch.float16 if name == "fp16" else torch.bfloat16
        dev = _cuda()
        return TorchForward(to_module(w).to(dev, dtype), dev, dtype, f"cuda-{name}")
    raise ValueError(f"unknown form {name!r}; valid: {', '.join(FORMS)}")


def call_times(
    forward: Callable[[np.ndarray], np.ndarray], dim: int, repeats: int, warmup: int = 1
) -> list[float]:
    """Wall times (seconds) of ``repeats`` batch-1 calls, after ``warmup`` untimed ones."""
    z = np.zeros((1, dim), np.float32)
    for _ in range(warmup):
        forward(z)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(z)
        times.append(time.perf_counter() - t0)
    return times


def latency_us(forward: Callable[[np.ndarray], np.ndarray], dim: int, repeats: int = 30) -> float:
    """Median wall time of one batch-1 call, in microseconds (after a warm-up call)."""
    return statistics.median(call_times(forward, dim, repeats)) * 1e6


def measured(draft: Draft) -> Draft:
    """``draft`` with its batch-1 latency, measured here unless choosing its form measured it
    (the first model, compression off or skipped after a drift alarm): ``info`` reports it."""
    if not np.isnan(draft.latency_us):
        return draft
    w = draft.weights
    forward = draft.forward or NumpyForward(w.weights, w.biases, w.activation)
    return replace(draft, forward=forward, latency_us=latency_us(forward, len(w.x_mean)))


@dataclass(frozen=True, slots=True)
class Built:
    name: str
    forward: Forward | None
    reason: str = ""  # why it is missing, when forward is None


def build_forms(
    names: tuple[str, ...], w: DenseWeights, prune_amount: float, units_amount: float
) -> list[Built]:
    """The plain ``numpy`` form first, then each of ``names`` that can be built here."""
    out = [Built("numpy", build_form("numpy", w, prune_amount, units_amount))]
    for name in names:
        if name == "numpy":
            continue
        try:
            out.append(Built(name, build_form(name, w, prune_amount, units_amount)))
        except Unavailable as e:
            out.append(Built(name, None, str(e)))
        except Exception as e:  # noqa: BLE001 - a broken optional form never stops learning
            out.append(Built(name, None, f"failed: {type(e).__name__}: {e}"))
    return out


def select_form(
    draft: Draft, X: np.ndarray, y: np.ndarray, cfg: CompressionConfig
) -> tuple[Draft, list[dict]]:
    """Build ``cfg.forms`` of ``draft`` and return the draft to serve plus one row per form.

    A form is eligible when it scores within ``cfg.tolerance`` of the plain numpy copy on the
    labelled window ``X, y`` (events the model has not trained on); the eligible form with the
    lowest batch-1 latency wins if it is ``cfg.min_speedup`` times faster than the plain copy.
    Each row's ``outcome``: served, plain (the plain copy, not served), passed (eligible, not
    the fastest), slower (eligible, not fast enough), worse, nonfinite, unavailable.
    """
    built = build_forms(cfg.forms, draft.weights, cfg.prune_amount, cfg.units_amount)
    dim = len(draft.weights.x_mean)
    plain_fwd = built[0].forward
    assert plain_fwd is not None
    plain = replace(draft, forward=plain_fwd, latency_us=latency_us(plain_fwd, dim))
    plain_out = Snapshot.from_draft(plain, -1).predict_many(X)
    task = draft.task
    rows: list[dict] = [
        {"name": "numpy", "form": plain_fwd.form, "latency_us": round(plain.latency_us, 1)}
    ]
    eligible: list[tuple[float, int, Draft]] = []
    for b in built[1:]:
        if b.forward is None:
            rows.append(
                {"name": b.name, "form": b.name, "outcome": "unavailable", "reason": b.reason}
            )
            continue
        form = replace(draft, forward=b.forward)
        verdict = within(
            task, Snapshot.from_draft(form, -1).predict_many(X), plain_out, y, cfg.tolerance
        )
        row = {
            "name": b.name,
            "form": b.forward.form,
            "score": round(verdict.candidate_score, 5),
            "plain_score": round(verdict.served_score, 5),
            "size_bytes": b.forward.size_bytes,
        }
        rows.append(row)
        if not verdict.publish:
            row["outcome"] = verdict.reason
            continue
        us = latency_us(b.forward, dim)
        row["latency_us"] = round(us, 1)
        row["outcome"] = "slower"
        if us * cfg.min_speedup <= plain.latency_us:
            row["outcome"] = "passed"
            eligible.append((us, len(rows) - 1, replace(form, latency_us=us)))
    if not eligible:
        rows[0]["outcome"] = "served"
        return plain, rows
    _, i, best = min(eligible, key=lambda e: e[0])
    rows[0]["outcome"] = "plain"
    rows[i]["outcome"] = "served"
    return best, rows


def reuse_form(
    draft: Draft,
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    cfg: CompressionConfig,
    latency_us: float = float("nan"),
) -> tuple[Draft, list[dict]]:
    """``draft`` in form ``name`` (chosen by :func:`select_form` for an earlier candidate, when
    it measured ``latency_us``) if it scores within ``cfg.tolerance`` of the plain copy on
    ``X, y``, else the plain copy; rows as :func:`select_form`'s, without timing again."""
    plain_fwd = build_form("numpy", draft.weights, cfg.prune_amount, cfg.units_amount)
    plain = replace(draft, forward=plain_fwd)
    rows: list[dict] = [{"name": "numpy", "form": plain_fwd.form, "outcome": "served"}]
    if name == "numpy":
        return plain, rows
    try:
        fwd = build_form(name, draft.weights, cfg.prune_amount, cfg.units_amount)
    except Exception as e:  # noqa: BLE001 - a broken optional form never stops learning
        rows.append({"name": name, "form": name, "outcome": "unavailable", "reason": str(e)})
        return plain, rows
    form = replace(draft, forward=fwd, latency_us=latency_us)
    plain_out = Snapshot.from_draft(plain, -1).predict_many(X)
    verdict = within(
        draft.task, Snapshot.from_draft(form, -1).predict_many(X), plain_out, y, cfg.tolerance
    )
    row = {
        "name": name,
        "form": fwd.form,
        "outcome": "served" if verdict.publish else verdict.reason,
    }
    rows.append(row)
    if not verdict.publish:
        return plain, rows
    rows[0]["outcome"] = "plain"
    return form, rows
