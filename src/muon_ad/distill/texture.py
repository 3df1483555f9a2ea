"""A texture loss the student's own output is scored by: feature statistics of a fixed random-weight conv pyramid.

Why: L1 onto the teacher's AD images pulls the student toward the average answer and drops the high frequencies a
texture lives in (the student painted the style's palette, not its texture). The one-pass stylizers that draw
strokes (AdaIN, MicroAST) match feature statistics of their own output to the style's at several depths instead.
Without pretrained weights offline, a multi-scale conv pyramid with random weights still carries texture statistics
(Ustyuzhaninov et al. 2017; He et al. 2016): here five stages, each a 3x3 convolution (stride 2 after the first) and
a ReLU, He-initialised from a fixed seed and frozen. Its receptive field grows to ~90 px, so one loss covers stripes
of a few pixels and checks of tens.

- `texture_loss`: per stage, the Gram matrix of the output's features against the style's, as a relative error
  (||G(out) - G(style)|| / ||G(style)||, so every stage counts alike whatever its scale), plus the same for the
  pixels' per-channel mean and spread (the palette). 0 for the style itself; shift- and layout-invariant, so a
  texture drawn at any phase scores as well as one pasted.
- `structure_loss`: the content kept, measured on luminance only (so the palette is free to change): the squared
  error of the pyramid's stage-`depth` features of the output's and the content's grey images (standardised), each
  channel standardised over the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muon_ad.data.images import luminance
from muon_ad.models.student import channel_mean_std

PYRAMID_WIDTHS = (32, 64, 128, 128, 128)


class RandomPyramid(nn.Module):
    """Frozen random-weight conv pyramid: (B, 3, H, W) in [-1, 1] → one feature map per stage."""

    def __init__(self, widths: tuple[int, ...] = PYRAMID_WIDTHS, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        for k, (cin, cout) in enumerate(zip((3, *widths), widths)):
            conv = nn.Conv2d(cin, cout, 3, stride=1 if k == 0 else 2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2 / (cin * 9)) ** 0.5)
                conv.bias.zero_()
            self.stages.append(conv)
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for conv in self.stages:
            x = F.relu(conv(x))
            maps.append(x)
        return maps


def _gram(m: Tensor) -> Tensor:
    return torch.einsum("bchw,bdhw->bcd", m, m) / (m.shape[-2] * m.shape[-1])


def _relative(a: Tensor, b: Tensor) -> Tensor:
    """Per sample ||a - b|| / ||b||."""
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1).clamp_min(1e-8)


def texture_loss(pyramid: RandomPyramid, images: Tensor, styles: Tensor) -> Tensor:
    """Mean over the batch and the stages (and the pixels' colour statistics) of the relative Gram error."""
    with torch.no_grad():
        style_grams = [_gram(m) for m in pyramid(styles)]
    terms = [_relative(_gram(m), g) for m, g in zip(pyramid(images), style_grams)]
    terms.append(_relative(channel_mean_std(images), channel_mean_std(styles)))
    return torch.stack(terms).mean()


def _grey(images: Tensor) -> Tensor:
    """Luminance, standardised over each image (so its brightness and contrast are free), as three equal channels."""
    return _standardised(luminance(images)[:, None]).expand(-1, 3, -1, -1)


def _standardised(m: Tensor) -> Tensor:
    return (m - m.mean(dim=(2, 3), keepdim=True)) / m.std(dim=(2, 3), keepdim=True).clamp_min(1e-4)


def structure_loss(pyramid: RandomPyramid, images: Tensor, contents: Tensor, depth: int = 2) -> Tensor:
    """Mean squared error between the stage-`depth` features of the grey output and the grey content, each channel
    standardised over the image: where the content's structure is, not its brightness or contrast (a palette moves
    both)."""
    with torch.no_grad():
        reference = _standardised(pyramid(_grey(contents))[depth])
    return F.mse_loss(_standardised(pyramid(_grey(images))[depth]), reference)
