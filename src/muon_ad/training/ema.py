"""Exponential moving average of the weights, and evaluating with it in place of the training weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from diffusers.training_utils import EMAModel
from torch import nn


@contextlib.contextmanager
def ema_weights(ema: EMAModel, model: nn.Module) -> Iterator[None]:
    """Run the block with the EMA weights in `model`, then put the training weights back."""
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())
