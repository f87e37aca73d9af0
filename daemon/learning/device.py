"""Where the learner's tensors live: ``learning.device`` resolved against the model's size."""

from __future__ import annotations

import torch

from learnd.daemon.errors import StartupError

# Below this many parameters a CUDA step costs more than a CPU one: on an H100 against one CPU
# thread at batch 32 (bench/learner.py), 67k parameters learned at 13k/s on CUDA and 20k/s on the
# CPU, 265k at 13k/s against 7k/s. Kernel launches and the per-step device sync dominate small
# models.
AUTO_CUDA_MIN_PARAMETERS = 100_000


def resolve_device(device: str, n_parameters: int | None = None) -> torch.device:
    """``auto`` picks CUDA when available and the model has at least
    :data:`AUTO_CUDA_MIN_PARAMETERS` parameters (all models, when ``n_parameters`` is None);
    ``cuda`` without a GPU is a start-up error."""
    if device == "auto":
        big = n_parameters is None or n_parameters >= AUTO_CUDA_MIN_PARAMETERS
        return torch.device("cuda" if torch.cuda.is_available() and big else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise StartupError(
            "learning.device is 'cuda' but torch sees no CUDA device; valid values: "
            "'auto', 'cpu', 'cuda'"
        )
    return torch.device(device)
