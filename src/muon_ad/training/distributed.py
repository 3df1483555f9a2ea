"""Which process of a (possibly distributed) run this is: only the main process writes logs and checkpoints."""

from __future__ import annotations

import torch.distributed as dist


def rank() -> int:
    """This process's rank in the default process group; 0 when the run is not distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0
