"""Seamless tiling: make every convolution wrap around the image borders for the length of a `with` block.

With circular padding the UNet sees the latent as a torus, so the AD loss pulls the left edge toward
texture that continues the right edge, and the VAE decoder turns a periodic latent into a periodic
image: the output tiles without a seam. `nn.Conv2d` reads `padding_mode` at every forward, so switching
the attribute is enough; the original modes are put back afterwards, also when the block raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def circular_padding(*modules: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Set padding_mode="circular" on every Conv2d inside `modules` (no-op when not `enabled`)."""
    convs = [m for module in modules for m in module.modules() if isinstance(m, nn.Conv2d)] if enabled else []
    original = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in zip(convs, original):
            conv.padding_mode = mode
