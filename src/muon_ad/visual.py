"""Pictures people look at instead of reading numbers: labelled image grids."""

from __future__ import annotations

import textwrap

import torch
from PIL import Image, ImageDraw

from muon_ad.data.images import to_pil


def image_grid(
    images: torch.Tensor, labels: list[str] | None = None, ncols: int = 8, scale: int = 2, line_height: int = 12
) -> Image.Image:
    """Tile images (N, 3, H, W) in [-1, 1] into one picture, each upscaled `scale`× with its label under it
    (wrapped onto as many lines as the longest label needs, so no word is cut off)."""
    count, _, height, width = images.shape
    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    cell_w = width * scale
    chars = max(4, cell_w // 6)  # the default bitmap font is ~6 px per character
    lines = [textwrap.wrap(label, chars, break_long_words=True) for label in labels] if labels else []
    cell_h = height * scale + line_height * max((len(l) for l in lines), default=0)
    grid = Image.new("RGB", (ncols * cell_w, nrows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for i in range(count):
        x, y = (i % ncols) * cell_w, (i // ncols) * cell_h
        tile = to_pil(images[i]).resize((width * scale, height * scale), Image.NEAREST)
        grid.paste(tile, (x, y))
        for row, text in enumerate(lines[i] if lines else []):
            draw.text((x + 2, y + height * scale + row * line_height), text, fill="black")
    return grid
