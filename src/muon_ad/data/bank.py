"""A whole training set held in memory as uint8, so a training step costs no image decoding or generation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageBank:
    images: torch.Tensor  # (N, 3, H, W) uint8
    captions: list[str]

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """The images at `index` as floats in [-1, 1]."""
        return self.images[index].float().div(127.5).sub(1.0)
