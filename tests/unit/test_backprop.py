"""daemon/learning/backprop.py: the hand-written passes must give autograd's loss and gradients exactly."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from learnd.daemon.config import ModelConfig
from learnd.daemon.learning.backprop import Backprop
from learnd.daemon.learning.model import build_model, share_one_buffer

TASKS = {  # task -> (outputs, loss, target maker)
    "binary": (
        1,
        F.binary_cross_entropy_with_logits,
        lambda g, n: (torch.rand(n, 1, generator=g) > 0.5).float(),
    ),
    "multiclass": (7, F.cross_entropy, lambda g, n: torch.randint(0, 7, (n,), generator=g)),
    "regression": (1, F.mse_loss, lambda g, n: torch.randn(n, 1, generator=g) * 3),
}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize(
    "kind, hidden, activation",
    [
        ("mlp", (64, 64), "relu"),
        ("mlp", (16,), "tanh"),
        ("mlp", (32, 8, 4), "relu"),
        ("linear", (), "relu"),
    ],
)
def test_loss_and_gradients_equal_autograd_bit_for_bit(task, kind, hidden, activation, device):
    n_out, loss_fn, make_target = TASKS[task]
    cfg = ModelConfig(kind=kind, hidden=hidden or (8,), activation=activation)
    net = build_model(cfg, n_inputs=5, n_outputs=n_out).to(device)
    ref = copy.deepcopy(net)
    share_one_buffer(list(net.parameters()))  # as the learner holds them
    bp = Backprop(net, task)
    g = torch.Generator().manual_seed(1)
    for batch in (32, 1, 32, 7):  # buffers are overwritten, whatever the batch size before
        x = (torch.randn(batch, 5, generator=g) * 2).to(device)
        t = make_target(g, batch).to(device)
        for p in ref.parameters():
            p.grad = None
        want_raw = ref(x)
        want = loss_fn(want_raw, t)
        want.backward()
        # forward() with other weights (here a copy of the same) runs the same layers
        other = [p.detach().clone() for p in net.parameters()]
        assert torch.equal(bp.forward(x, other), want_raw.detach())
        raw, loss = bp.loss(x, t)
        bp.backward(t)
        assert torch.equal(raw, want_raw.detach()) and torch.equal(loss, want.detach())
        for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad), (name, batch, (p.grad - q.grad).abs().max())
        with torch.no_grad():  # move the weights, as a step would: views stay views
            for p, q in zip(net.parameters(), ref.parameters(), strict=True):
                p.sub_(0.1 * p.grad)
                q.sub_(0.1 * q.grad)


def test_gradients_are_views_of_one_buffer_and_no_graph_is_kept():
    net = build_model(ModelConfig(hidden=(8, 8)), n_inputs=3, n_outputs=1)
    bp = Backprop(net, "binary")
    x, t = torch.randn(4, 3), torch.ones(4, 1)
    raw, loss = bp.loss(x, t)
    bp.backward(t)
    assert not raw.requires_grad and not loss.requires_grad
    assert bp.grad.numel() == sum(p.numel() for p in net.parameters())
    for p in net.parameters():
        assert p.grad.untyped_storage().data_ptr() == bp.grad.untyped_storage().data_ptr()
    assert torch.equal(bp.grad, torch.cat([p.grad.reshape(-1) for p in net.parameters()]))


def test_unsupported_models_and_misuse_are_refused():
    with pytest.raises(ValueError, match="ReLU and Tanh"):
        Backprop(
            torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1)),
            "binary",
        )
    with pytest.raises(ValueError, match="one activation between"):
        Backprop(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)), "binary")
    net = build_model(ModelConfig(hidden=(4,)), n_inputs=2, n_outputs=1)
    with pytest.raises(ValueError, match="unknown task"):
        Backprop(net, "ranking")
    with pytest.raises(RuntimeError, match="before loss"):
        Backprop(net, "binary").backward(torch.ones(1, 1))
