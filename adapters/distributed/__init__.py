"""Parameter rounds over ``torch.distributed``: the group's process-group I/O."""

from learnd.adapters.distributed.torch_averager import TorchAverager, backend_for

__all__ = ["TorchAverager", "backend_for"]
