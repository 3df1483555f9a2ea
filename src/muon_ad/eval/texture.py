"""Is a stylisation's texture drawn, pasted or missing? Measures a recolouring or an overlay cannot pass.

The texture-family judge (`eval.recognition`) tells texture from colour: a recolouring of the content keeps the
content's structure and is named at chance. But pasting the style image over the content passes it, so texture
has a second guard:
- `copy_score`: per pair, the Pearson correlation at zero shift between the high-passed luminance of the output
  and of its style image resized to it. Drawing the style's texture anew (at any other phase, orientation or
  layout) scores ~0; the style image itself scores 1, a 50 % overlay of it ~0.5.
And a student whose head folds s x s pixel blocks (a strided stem, pixel-shuffle) can leave a grid at that period:
- `block_energy`: the luminance power at the frequencies of period `period` and its harmonics, along either axis,
  over the power beside them (a smooth spectrum scores ~1). Over a reference set's (the bench's `block_artifact_ratio`,
  e.g. over AD's outputs), 1 is as blocky as the reference; a pixel-shuffled random head is many times more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from muon_ad.data.images import luminance

def high_pass(images: Tensor, sigma: float = 2.0) -> Tensor:
    """(N, H, W) minus its Gaussian blur of `sigma` px (reflect padding): the fine structure a texture lives in."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = images[:, None]
    blurred = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return (x - blurred)[:, 0]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Per row i, the Pearson correlation of a[i] and b[i] over all their other dimensions."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def copy_scores(images: Tensor, styles: Tensor) -> Tensor:
    """Per pair, the zero-shift correlation of the high-passed luminance of image i and style i (resized to it)."""
    if styles.shape[-2:] != images.shape[-2:]:
        styles = F.interpolate(styles.float(), size=images.shape[-2:], mode="bilinear", align_corners=False,
                               antialias=True)
    return pearson(high_pass(luminance(images)), high_pass(luminance(styles)))


def copy_score(images: Tensor, styles: Tensor) -> float:
    """Mean of `copy_scores`: ~0 for a texture drawn anew, 1 for the style image pasted."""
    return float(copy_scores(images, styles).mean())


@torch.no_grad()
def block_energy(images: Tensor, period: int) -> float:
    """How much a grid of period x period blocks stands out: per axis, the luminance power (mean removed) at the
    frequencies k/period (k = 1 .. period-1, cycles per pixel) over the power at the frequencies one bin either side,
    averaged over both axes and the images. A smooth spectrum (photos, textures, white noise) scores ~1; a grid at
    that period puts peaks on exactly those bins.

    Sizes that are not a multiple of `period` are cropped to one (the bins then fall exactly on those frequencies)."""
    y = luminance(images)
    h, w = (s - s % period for s in y.shape[-2:])
    power = torch.fft.fft2(y[:, :h, :w] - y[:, :h, :w].mean(dim=(1, 2), keepdim=True)).abs().square()
    contrasts = []
    for spectrum, n in ((power.sum(2), h), (power.sum(1), w)):  # power by vertical, then horizontal frequency
        grid = torch.arange(1, period) * (n // period)
        beside = torch.cat([grid - 1, grid + 1])
        contrasts.append(spectrum[:, grid].mean(1) / spectrum[:, beside].mean(1).clamp_min(1e-12))
    return float(torch.stack(contrasts).mean())
