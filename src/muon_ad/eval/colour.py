"""Colour fidelity of an image round trip (an autoencoder's encode -> decode): does grey stay grey?

The figure is the colour cast: CIE76 ΔE (Euclidean distance in CIELAB, D65) between the mean colour of each
image and the mean colour of its round trip, averaged over a set. A cast the eye notices is ΔE ≳ 2-3; a grey turned
visibly purple is ΔE ≳ 10. The per-pixel ΔE (cast plus lost detail) and the mean |Δ| of the per-image mean RGB
(0-255 units) come alongside. Identity scores 0; returning a constant mid-grey scores ΔE ≈ 20-30.

The two test sets are made here, by generators the built-in teacher never trains on (its training data is
`data.procedural`), so they are held out by construction:
  grey:    uniform greys, and grey textures (smooth blotches, brick-like joints, film grain) at 10-90 % lightness;
  natural: photo-like fields (a two-colour gradient backdrop, soft-edged blobs, smooth shading, grain) whose colours
           are the 24 patches of the Macbeth ColorChecker (skin, sky, foliage, ... : the photographic standard of
           natural surface colours).
sRGB -> CIELAB is written here (a dozen lines of the standard formulas) rather than importing scikit-image, which is
only a dev dependency; tests check it against skimage.color.rgb2lab.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Macbeth ColorChecker Classic, sRGB 8-bit (X-Rite's published values, D65), row by row.
COLOR_CHECKER: tuple[tuple[int, int, int], ...] = (
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52),
)
_XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]])
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])


def srgb_to_lab(images: Tensor) -> Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIELAB (L in 0-100, a and b about ±100), D65 white."""
    x = images.float().clamp(0, 1)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _XYZ_FROM_RGB, linear) / _WHITE_D65.view(1, 3, 1, 1)
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def lab_to_srgb(lab: Tensor) -> Tensor:
    """The inverse of `srgb_to_lab`: CIELAB (D65) -> (N, 3, H, W) sRGB, clamped to [0, 1]."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    xyz = torch.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE_D65.view(1, 3, 1, 1)
    linear = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_XYZ_FROM_RGB), xyz).clamp(0, 1)
    return torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * linear)


def colour_errors(original: Tensor, reconstructed: Tensor) -> dict[str, float]:
    """Colour error of aligned image sets in [-1, 1]: mean-colour ΔE (the cast), per-pixel ΔE, mean |ΔRGB|."""
    a, b = (original.float() + 1) / 2, (reconstructed.float().to(original.device) + 1) / 2
    lab_a, lab_b = srgb_to_lab(a), srgb_to_lab(b)
    cast = (lab_a.mean(dim=(2, 3)) - lab_b.mean(dim=(2, 3))).norm(dim=1)
    pixel = (lab_a - lab_b).norm(dim=1)
    rgb = (a.mean(dim=(2, 3)) - b.mean(dim=(2, 3))).abs().mean(dim=1) * 255
    return {"delta_e": float(cast.mean()), "delta_e_pixel": float(pixel.mean()), "mean_rgb_error": float(rgb.mean())}


def _smooth(count: int, size: int, cells: int, generator: torch.Generator, channels: int = 1) -> Tensor:
    """Smooth random fields in [0, 1]: a (cells x cells) random grid, bicubically upsampled to size x size."""
    grid = torch.rand(count, channels, cells, cells, generator=generator)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def grey_set(count: int, size: int, seed: int) -> Tensor:
    """`count` grey images (N, 3, size, size) in [-1, 1]: the first quarter uniform, the rest grey textures."""
    g = torch.Generator().manual_seed(seed)
    level = 0.1 + 0.8 * torch.rand(count, 1, 1, 1, generator=g)
    blotch = _smooth(count, size, 6, g) - 0.5
    # Brick-like joints: horizontal courses, vertical joints offset every other course, a few px of darker mortar.
    rows = torch.randint(3, 7, (count, 1, 1, 1), generator=g).float()
    t = (torch.arange(size).float() + 0.5) / size
    v = t.view(1, 1, size, 1) * rows
    u = t.view(1, 1, 1, size) * rows / 2 + 0.5 * (v.floor() % 2)
    joint = ((v % 1) < 0.12) | ((u % 1) < 0.06)
    grain = torch.randn(count, 1, size, size, generator=g)
    texture = (level + 0.15 * blotch - 0.2 * joint.float() * (torch.rand(count, 1, 1, 1, generator=g) < 0.6)
               + 0.03 * grain)
    uniform = torch.arange(count).view(count, 1, 1, 1) < max(1, count // 4)
    grey = torch.where(uniform, level.expand(count, 1, size, size), texture).clamp(0, 1)
    return (grey * 2 - 1).expand(count, 3, size, size).contiguous()


def natural_set(count: int, size: int, seed: int) -> Tensor:
    """`count` photo-like images (N, 3, size, size) in [-1, 1] in ColorChecker colours (see the module note)."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor(COLOR_CHECKER, dtype=torch.float32) / 255
    pick = torch.randint(len(COLOR_CHECKER), (count, 5), generator=g)
    colours = palette[pick]  # (N, 5, 3): two for the backdrop, three for blobs
    t = (torch.arange(size).float() + 0.5) / size
    y = t.view(1, 1, size, 1).expand(count, 1, size, size)
    x = t.view(1, 1, 1, size).expand(count, 1, size, size)
    mix = (y + 0.3 * (_smooth(count, size, 3, g) - 0.5)).clamp(0, 1)
    img = colours[:, 0, :, None, None] * (1 - mix) + colours[:, 1, :, None, None] * mix
    for k in range(2, 5):
        centre = torch.rand(count, 2, 1, 1, generator=g)
        radius = 0.1 + 0.25 * torch.rand(count, 1, 1, 1, generator=g)
        d = ((x - centre[:, :1]) ** 2 + (y - centre[:, 1:]) ** 2).sqrt()
        alpha = torch.sigmoid((radius - d) * size / 3) * (torch.rand(count, 1, 1, 1, generator=g) < 0.7)
        img = img * (1 - alpha) + colours[:, k, :, None, None] * alpha
    shading = 0.85 + 0.3 * _smooth(count, size, 4, g)
    img = img * shading + 0.02 * torch.randn(count, 1, size, size, generator=g)
    return (img.clamp(0, 1) * 2 - 1).contiguous()


def round_trip_colour_errors(round_trip: Callable[[Tensor], Tensor], count: int, size: int,
                             seed: int = 0) -> dict[str, float]:
    """Colour errors of `round_trip` (images in [-1, 1] -> same shape) on the grey and natural sets:
    {colour_error_grey, colour_error_natural} (mean-colour ΔE) and their _pixel and _rgb companions."""
    out: dict[str, float] = {}
    for name, images in (("grey", grey_set(count, size, seed)), ("natural", natural_set(count, size, seed + 1))):
        errors = colour_errors(images, round_trip(images))
        out[f"colour_error_{name}"] = errors["delta_e"]
        out[f"colour_error_{name}_pixel"] = errors["delta_e_pixel"]
        out[f"colour_error_{name}_rgb"] = errors["mean_rgb_error"]
    return out
