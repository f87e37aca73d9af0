"""The group's mean over ``torch.distributed``: one ``all_reduce`` (SUM, then divide by N).

Membership is ``torch.distributed``'s rendezvous: every learner of the group calls
``init_process_group`` with the same ``tcp://host:port`` (rank 0's store), its own rank and the
group's size, and waits there for the others (up to ``timeout_s``). Backend: gloo for a learner
on the CPU, NCCL for one on a CUDA device (the vector then travels through the GPU; not run in
this repository's tests, which have no GPU). ``timeout_s`` is also each collective's deadline:
a peer that is late or gone makes :meth:`TorchAverager.mean` raise
:class:`~learnd.daemon.ports.RoundFailed` instead of blocking.

gloo's ring all_reduce ends with every rank holding the same reduced values, so the mean (and
the state a round scatters from it) is the same bit for bit everywhere
(tests/integration/test_distributed_round.py).
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from learnd.daemon.errors import StartupError
from learnd.daemon.ports import RoundFailed


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for a CUDA device, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


class TorchAverager:
    """A :class:`~learnd.daemon.ports.StateAverager` over the default process group, which it
    creates (one per process) and destroys at :meth:`close`."""

    def __init__(
        self,
        rank: int,
        size: int,
        init_method: str,
        timeout_s: float = 60.0,
        device: str | torch.device = "cpu",
    ):
        if not 0 <= rank < size:
            raise StartupError(f"rank {rank} is not in 0..{size - 1}")
        if not init_method.startswith("tcp://"):
            raise StartupError(f"init_method {init_method!r}: expected tcp://host:port")
        self.device = torch.device(device)
        self.backend = backend_for(self.device)
        if not dist.is_available() or (self.backend == "gloo" and not dist.is_gloo_available()):
            raise StartupError(f"torch.distributed with {self.backend} is not available")
        dist.init_process_group(
            self.backend,
            init_method=init_method,
            rank=rank,
            world_size=size,
            timeout=timedelta(seconds=timeout_s),
        )
        self._rank = rank
        self._size = size
        self.timeout_s = timeout_s
        self.values_sent = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def rank(self) -> int:
        return self._rank

    def mean(self, vector: torch.Tensor) -> torch.Tensor:
        t = vector.detach().to(self.device, torch.float64, copy=True)
        try:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        except RuntimeError as e:  # gloo's timeout, or a peer that closed its connections
            raise RoundFailed(f"all_reduce over {self._size} learners failed: {e}") from e
        self.values_sent += t.numel()
        return (t / self._size).cpu()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
