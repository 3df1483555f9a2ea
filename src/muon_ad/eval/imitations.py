"""Cheap imitations of stylisation, the rows a texture measure must fail: they take the style's colours or paste
its pixels, and draw nothing.

- `colour_transfer`: Reinhard et al. (2001) colour matching, each CIELAB channel of the content standardised and
  given the style's mean and spread: the style's palette on the content's structure, no texture;
- `overlay`: a blend of the colour transfer with the style image itself (resized to the content): the style's
  texture pasted, not drawn.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from muon_ad.eval.colour import lab_to_srgb, srgb_to_lab


def colour_transfer(contents: Tensor, styles: Tensor) -> Tensor:
    """Each content (N, 3, H, W) in [-1, 1] with the CIELAB mean and standard deviation of its style, per channel."""
    lab_c, lab_s = srgb_to_lab((contents.float() + 1) / 2), srgb_to_lab((styles.float() + 1) / 2)
    mean_c, std_c = lab_c.mean(dim=(2, 3), keepdim=True), lab_c.std(dim=(2, 3), keepdim=True)
    mean_s, std_s = lab_s.mean(dim=(2, 3), keepdim=True), lab_s.std(dim=(2, 3), keepdim=True)
    matched = (lab_c - mean_c) / std_c.clamp_min(1e-3) * std_s + mean_s
    return lab_to_srgb(matched) * 2 - 1


def overlay(contents: Tensor, styles: Tensor, opacity: float = 0.5) -> Tensor:
    """(1 - opacity) · colour transfer + opacity · the style image resized to the content."""
    resized = F.interpolate(styles.float(), size=contents.shape[-2:], mode="bilinear", align_corners=False,
                            antialias=True)
    return (1 - opacity) * colour_transfer(contents, styles) + opacity * resized
