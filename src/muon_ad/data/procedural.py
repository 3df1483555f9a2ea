"""Built-in data with no downloads: procedural textures (styles) and simple content scenes.

The built-in teacher LDM is trained on these images, at 32-64 px, and its samples must be recognisably
the family they were prompted for. So each family has one bold, distinctive structure (straight bands,
curved bands, sharp zigzags, tiles, lattices of dots, irregular cells, ...) with only 2-7 repeats
across the image, whatever the size: a 32 px and a 512 px texture of the same rng look alike.
Scenes are content images for style transfer: flat-coloured objects with dark outlines, so their
structure (edges) is unambiguous.

Everything is a vectorised numpy function of an explicit `np.random.Generator`. Shapes are drawn as
hard masks; up to 128 px on a 2x supersampled grid, box-filtered down, which anti-aliases every edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from muon_ad.data.images import array_to_tensor
from muon_ad.errors import UserError

# Each palette: a name made of its two dominant colour words (so captions can say them) and four colours.
PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "blue_orange": ((22, 44, 105), (50, 118, 205), (245, 145, 40), (252, 232, 200)),
    "red_white": ((115, 18, 28), (214, 40, 50), (250, 248, 240), (238, 175, 170)),
    "green_yellow": ((24, 78, 40), (72, 160, 70), (245, 212, 55), (232, 244, 188)),
    "purple_pink": ((58, 28, 98), (130, 70, 182), (240, 118, 178), (250, 210, 230)),
    "black_white": ((18, 18, 18), (95, 95, 95), (245, 245, 245), (180, 180, 180)),
    "teal_coral": ((10, 78, 88), (30, 160, 158), (250, 118, 98), (250, 226, 210)),
    "brown_beige": ((72, 42, 22), (150, 95, 52), (222, 190, 145), (246, 236, 216)),
    "magenta_cyan": ((105, 18, 88), (222, 40, 160), (38, 198, 222), (212, 245, 250)),
}

Fields = Callable[[np.ndarray, np.ndarray, np.random.Generator, np.ndarray, float], np.ndarray]


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): x grows to the right, y downwards; shape (n, n) each."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.broadcast_to(t[None, :], (n, n)), np.broadcast_to(t[:, None], (n, n))


def _rotate(x: np.ndarray, y: np.ndarray, angle: float, cx: float = 0.5, cy: float = 0.5):
    """Coordinates relative to (cx, cy), rotated by `angle`."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = x - cx, y - cy
    return c * x + s * y, -s * x + c * y


def _luminance(colours: np.ndarray) -> np.ndarray:
    return colours @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _by_luminance(c: np.ndarray) -> np.ndarray:
    return c[np.argsort(_luminance(c))]


def _pick(colours: np.ndarray, index: np.ndarray) -> np.ndarray:
    """colours[index] for an integer map -> (..., 3); np.take is several times faster than fancy indexing."""
    return np.take(colours, index, axis=0)


def _ramp(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour map: t in [0, 1] -> (..., 3), through `colours` in order."""
    pos = np.clip(t, 0.0, 1.0) * (len(colours) - 1)
    i = np.minimum(pos.astype(np.int64), len(colours) - 2)
    f = (pos - i)[..., None]
    return _pick(colours, i) * (1.0 - f) + _pick(colours, i + 1) * f


def _value_noise(n: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field on an n x n grid: random values on a (cells+1)^2 lattice, smoothstep-interpolated."""
    lattice = rng.random((cells + 1, cells + 1), dtype=np.float32)
    t = (np.arange(n, dtype=np.float32) + 0.5) / n * cells
    i = t.astype(np.int64)
    f = t - i
    f = f * f * (3.0 - 2.0 * f)
    rows = lattice[:, i] * (1 - f) + lattice[:, i + 1] * f  # interpolate along x first: (cells+1, n)
    return np.take(rows, i, axis=0) * (1 - f[:, None]) + np.take(rows, i + 1, axis=0) * f[:, None]


# Each family: (x, y, rng, colours (4, 3) float in random order, pixel size in image units) -> (n, n, 3).


def _stripes(x, y, rng, c, px):
    u, _ = _rotate(x, y, rng.uniform(0, np.pi))
    band = np.floor(u * rng.uniform(4, 8) + rng.random()).astype(np.int64)
    return _pick(c, band % rng.integers(2, 4))


def _checks(x, y, rng, c, px):
    u, v = _rotate(x, y, rng.uniform(0, np.pi / 2))
    n = rng.uniform(3, 6)
    return _pick(c, (np.floor(u * n + rng.random()) + np.floor(v * n + rng.random())).astype(np.int64) % 2)


def _dots(x, y, rng, c, px):
    u, v = _rotate(x, y, rng.uniform(0, np.pi / 2))
    n = rng.uniform(3, 6)
    row = np.floor(v * n + rng.random())
    stagger = 0.5 * (row % 2) * (rng.random() < 0.5)  # square or hexagonal lattice
    du = (u * n + stagger) % 1.0 - 0.5
    dv = (v * n + rng.random()) % 1.0 - 0.5
    dot = du * du + dv * dv < rng.uniform(0.2, 0.34) ** 2
    return _pick(c, dot.astype(np.int64))


def _banded(offset: Callable[[np.ndarray], np.ndarray]) -> Fields:
    """Parallel bands displaced across their direction by offset(phase along the bands)."""

    def field(x, y, rng, c, px):
        u, v = _rotate(x, y, rng.uniform(0, np.pi))
        along = u * rng.uniform(1.2, 2.5) + rng.random()
        band = np.floor((v + rng.uniform(0.08, 0.12) * offset(along)) * rng.uniform(3, 5.5))
        return _pick(c, band.astype(np.int64) % rng.integers(2, 4))

    return field


def _noise(x, y, rng, c, px):
    n = x.shape[0]
    base = int(rng.integers(2, 4))
    field = sum(0.5**o * _value_noise(n, base * 2**o, rng) for o in range(4))
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    return _ramp(field, _by_luminance(c))


def _cells(x, y, rng, c, px):
    k = int(rng.integers(7, 15))
    pts = rng.random((k, 2), dtype=np.float32)
    # Running nearest and second-nearest squared distances, one seed at a time: no (n, n, k) array, and
    # x, y are the axis-aligned grid, so each distance is a (1, n) + (n, 1) broadcast.
    xs, ys = x[:1], y[:, :1]
    d1, d2 = np.full(x.shape, np.inf, np.float32), np.full(x.shape, np.inf, np.float32)
    nearest = np.zeros(x.shape, np.int64)
    for j, (sx, sy) in enumerate(pts):
        d = (ys - sy) ** 2 + (xs - sx) ** 2
        nearest[d < d1] = j
        np.minimum(d2, np.maximum(d1, d), out=d2)
        np.minimum(d1, d, out=d1)
    c = _by_luminance(c)
    img = _pick(c[1:][rng.integers(0, 3, k)], nearest)
    border = np.sqrt(d2) - np.sqrt(d1) < max(0.025, 2.5 * px)  # dark leading between cells, like stained glass
    return np.where(border[..., None], c[0], img)


def _gradient(x, y, rng, c, px):
    if rng.random() < 0.5:
        u, _ = _rotate(x, y, rng.uniform(0, 2 * np.pi))
        t = u / 1.42 + 0.5
    else:
        cx, cy = rng.uniform(0.1, 0.9, 2)
        t = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / 1.1
    return _ramp(t, c[: rng.integers(2, 4)])


def _rings(x, y, rng, c, px):
    cx, cy = rng.uniform(0.15, 0.85, 2)
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    band = np.floor(r * rng.uniform(6, 10) + rng.random()).astype(np.int64)
    return _pick(c, band % rng.integers(2, 4))


def _bricks(x, y, rng, c, px):
    u, v = _rotate(x, y, rng.choice([0.0, np.pi / 2]))
    rows = rng.uniform(4, 7)
    width = rng.uniform(1.8, 2.6) / rows
    rv = v * rows + rng.random()
    row = np.floor(rv)
    ru = u / width + 0.5 * (row % 2) + rng.random()
    col = np.floor(ru)
    mortar = max(0.025, 2.0 * px)
    joint = (rv % 1.0 < mortar * rows) | (ru % 1.0 < mortar / width)
    c = _by_luminance(c)
    brick = (row.astype(np.int64) % 16) * 16 + col.astype(np.int64) % 16
    tone = np.take(rng.integers(0, 2, 256), brick)  # each brick one of two colours, at random
    return np.where(joint[..., None], c[3], _pick(c, tone))


def _plaid(x, y, rng, c, px):
    """Tartan: the same sett of coloured bands of unequal width across and down, averaged like a weave."""
    u, v = _rotate(x, y, rng.uniform(-0.3, 0.3))
    widths = rng.uniform(0.2, 1.0, 5)
    edges = np.cumsum(widths) / widths.sum()
    colours = c[rng.integers(0, 4, 5)]
    colours[0], colours[2] = c[0], c[1]  # at least two different colours in the sett
    repeats = rng.uniform(1.8, 3.2)

    def sett(t):
        return _pick(colours, np.minimum(np.searchsorted(edges, (t * repeats + 0.5) % 1.0), 4))

    return 0.5 * (sett(u) + sett(v))


def _hexagons(x, y, rng, c, px):
    """Honeycomb: the nearest centre of a triangular lattice, 3-coloured, with dark edges."""
    u, v = _rotate(x, y, rng.uniform(0, np.pi / 3))
    w = 1.0 / rng.uniform(3, 6)  # centre spacing along a row = the hexagon's width across flats
    h = w * np.sqrt(3.0)
    u, v = u / w + rng.random(), v / h + rng.random()  # in lattice units
    ia, ib = np.rint(u), np.floor(u)  # lattice A: centres (i, j); lattice B: centres (i + 1/2, j + 1/2)
    ax, ay = u - ia, v - np.rint(v)
    bx, by = u - ib - 0.5, v - np.floor(v) - 0.5
    in_a = ax * ax + 3.0 * ay * ay < bx * bx + 3.0 * by * by  # (h / w)^2 = 3
    dx, dy = np.abs(np.where(in_a, ax, bx)), np.abs(np.where(in_a, ay, by)) * np.sqrt(3.0)
    # Offset rows -> axial (q, r); (q - r) mod 3 is a 3-colouring (no two neighbours alike): i for A, i - 1 for B.
    colour = np.where(in_a, ia, ib - 1).astype(np.int64) % 3
    edge = np.maximum(dx, 0.5 * dx + np.sqrt(3.0) / 2 * dy) > 0.5 - max(0.012, 1.2 * px) / w
    c = _by_luminance(c)
    return np.where(edge[..., None], c[0], _pick(c[1:], colour))


_FAMILIES: dict[str, Fields] = {
    "stripes": _stripes,
    "checks": _checks,
    "dots": _dots,
    "waves": _banded(lambda t: np.sin(2 * np.pi * t)),
    "noise": _noise,
    "cells": _cells,
    "gradient": _gradient,
    "rings": _rings,
    "zigzag": _banded(lambda t: 2.0 * np.abs(2.0 * (t % 1.0) - 1.0) - 1.0),
    "bricks": _bricks,
    "plaid": _plaid,
    "hexagons": _hexagons,
}
TEXTURE_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


def _supersample(size: int) -> int:
    # 2x up to 128 px anti-aliases edges; above, one pixel is small enough that 4x the work is not worth it.
    return 2 if size <= 128 else 1


def _finish(img: np.ndarray, ss: int) -> np.ndarray:
    """Box-filter the ss x ss supersamples (strided sums: much faster than reshape().mean()) -> uint8."""
    acc = img[::ss, ::ss].astype(np.float32)
    for k in range(1, ss * ss):
        acc += img[k // ss :: ss, k % ss :: ss]
    acc = acc * (1.0 / (ss * ss)) + 0.5  # + 0.5: round, not truncate, in the cast below
    return np.clip(acc, 0, 255).astype(np.uint8)


def _check_size(size: int) -> None:
    if not 8 <= size <= 4096:
        raise UserError(f"procedural image size must be between 8 and 4096 px, got {size}")


def make_texture(family: str, palette: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One texture of `family` in `palette` colours: (size, size, 3) uint8. Scale, orientation, phase and
    the roles of the palette colours are drawn from `rng`."""
    if family not in _FAMILIES:
        raise UserError(f"unknown texture family {family!r}; choose from {', '.join(TEXTURE_FAMILIES)}")
    if palette not in PALETTES:
        raise UserError(f"unknown palette {palette!r}; choose from {', '.join(PALETTES)}")
    _check_size(size)
    ss = _supersample(size)
    colours = np.array(PALETTES[palette], dtype=np.float32)[rng.permutation(len(PALETTES[palette]))]
    x, y = _grid(size * ss)
    return _finish(_FAMILIES[family](x, y, rng, colours, 1.0 / size), ss)


def palette_words(palette: str) -> str:
    """'blue_orange' -> 'blue and orange': how captions name a palette."""
    return " and ".join(palette.split("_"))


def texture_caption(family: str, palette: str) -> str:
    """'blue and orange stripes': palette words then the family name, so caption -> class is a lookup."""
    return f"{palette_words(palette)} {family}"


# ----------------------------------------------------------------------------------------------- scenes

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "orange": (245, 140, 30),
    "yellow": (250, 215, 50),
    "green": (60, 170, 70),
    "blue": (45, 100, 215),
    "purple": (140, 70, 190),
    "pink": (245, 135, 185),
    "white": (245, 245, 240),
    "brown": (135, 85, 45),
    "gray": (130, 130, 135),
}
SKIES = {"blue sky": ((70, 130, 220), (175, 215, 250)), "sunset sky": ((120, 70, 160), (250, 170, 90)),
         "night sky": ((10, 15, 50), (45, 60, 120))}
GROUNDS = {"green grass": (80, 160, 60), "sand": (225, 195, 130), "snow": (238, 242, 248)}
SCENE_KINDS: tuple[str, ...] = ("landscape", "gradient", "plain")
SHAPES = ("circle", "square", "triangle", "house", "tree")
TREE_COLOURS = ("green", "green", "orange", "yellow", "pink")  # leaves or blossom; green most often


def _circle(x, y, cx, cy, r):
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _box(x, y, cx, cy, hw, hh, angle=0.0):
    u, v = _rotate(x, y, angle, cx, cy)
    return np.maximum(np.abs(u) - hw, np.abs(v) - hh)


def _polygon(x, y, pts):
    """Convex polygon, vertices counter-clockwise as seen on screen: max of signed distances to its edges."""
    d = None
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]):
        nx, ny = ay - by, bx - ax  # outward normal for this winding (y points down)
        dist = ((x - ax) * nx + (y - ay) * ny) / np.hypot(nx, ny)
        d = dist if d is None else np.maximum(d, dist)
    return d


class _Canvas:
    """Painter's-algorithm canvas: each shape is a signed distance (negative inside), filled with a dark
    outline of `line` width around it so every object has a crisp edge."""

    def __init__(self, img: np.ndarray, line: float):
        self.img, self.line = img, line

    def paint(self, sdf: np.ndarray, colour, outline: bool = True) -> None:
        colour = np.asarray(colour, dtype=np.float32)
        if outline:
            self.img[sdf < self.line] = colour * 0.3
        self.img[sdf < 0] = colour


def _contrasting(rng, avoid: np.ndarray, names: Sequence[str] = tuple(COLOURS)) -> str:
    ok = [n for n in names if np.abs(np.array(COLOURS[n]) - avoid).sum() > 150]
    return str(rng.choice(ok or list(names)))


def _draw_object(cv: _Canvas, x, y, kind: str, cx: float, base: float, s: float, colour: str, rng) -> None:
    """Draw `kind` of size s standing on y=base (centred at x=cx)."""
    col = COLOURS[colour]
    if kind == "circle":
        cv.paint(_circle(x, y, cx, base - s / 2, s / 2), col)
    elif kind == "square":
        cv.paint(_box(x, y, cx, base - s / 2, s / 2.4, s / 2.4, rng.uniform(-0.4, 0.4)), col)
    elif kind == "triangle":
        cv.paint(_polygon(x, y, [(cx - s / 2, base), (cx + s / 2, base), (cx, base - s)]), col)
    elif kind == "house":
        body = s * 0.55
        cv.paint(_box(x, y, cx, base - body / 2, s / 2.6, body / 2), col)
        cv.paint(_polygon(x, y, [(cx - s / 2, base - body), (cx + s / 2, base - body), (cx, base - s)]),
                 COLOURS["red"] if colour != "red" else COLOURS["brown"])
        cv.paint(_box(x, y, cx, base - body * 0.28, s * 0.08, body * 0.28), COLOURS["brown"])
    elif kind == "tree":
        cv.paint(_box(x, y, cx, base - s * 0.2, s * 0.07, s * 0.2), COLOURS["brown"])
        if rng.random() < 0.5:
            cv.paint(_circle(x, y, cx, base - s * 0.62, s * 0.3), col)
        else:
            cv.paint(_polygon(x, y, [(cx - s * 0.35, base - s * 0.3), (cx + s * 0.35, base - s * 0.3),
                                     (cx, base - s * 1.05)]), col)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def make_scene(size: int, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A content image with clear edges, and its caption: 1-4 outlined objects (circles, squares, triangles,
    houses, trees) on a landscape (sky, sun or moon, ground), a two-colour gradient, or a plain colour."""
    _check_size(size)
    kind = kind or str(rng.choice(SCENE_KINDS))
    if kind not in SCENE_KINDS:
        raise UserError(f"unknown scene kind {kind!r}; choose from {', '.join(SCENE_KINDS)}")
    ss = _supersample(size)
    x, y = _grid(size * ss)
    img = np.empty((size * ss, size * ss, 3), dtype=np.float32)
    cv = _Canvas(img, max(0.012, 1.5 / size))

    if kind == "landscape":
        sky = str(rng.choice(list(SKIES)))
        ground = str(rng.choice(list(GROUNDS)))
        top, bottom = (np.array(c, np.float32) for c in SKIES[sky])
        img[:] = _ramp(y * 1.4, np.stack([top, bottom]))
        sx, sr = rng.uniform(0.15, 0.85), rng.uniform(0.07, 0.11)
        light = "moon" if sky == "night sky" else "sun"
        if light == "sun":
            r, theta = np.sqrt((x - sx) ** 2 + (y - 0.18) ** 2), np.arctan2(y - 0.18, x - sx)
            rays = (r < sr * 1.8) & (np.cos(10 * theta + rng.uniform(0, 6.3)) > 0.5)
            img[rays] = COLOURS["yellow"]
        cv.paint(_circle(x, y, sx, 0.18, sr), (250, 220, 60) if light == "sun" else (235, 235, 215), False)
        horizon = rng.uniform(0.55, 0.72)
        hill = horizon + rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * (x * rng.uniform(0.6, 1.5) + rng.random()))
        cv.paint(hill - y, GROUNDS[ground], False)
        background = np.array(GROUNDS[ground], np.float32)
        place = f"on {ground} under a {sky} with the {light}"
    elif kind == "gradient":
        a, b = rng.choice(list(COLOURS), 2, replace=False)
        u, _ = _rotate(x, y, rng.uniform(0, 2 * np.pi))
        img[:] = _ramp(u / 1.42 + 0.5, np.array([COLOURS[a], COLOURS[b]], np.float32))
        background = (np.array(COLOURS[a], np.float32) + COLOURS[b]) / 2
        horizon, place = 0.95, f"on a {a} to {b} gradient"
    else:
        name = str(rng.choice(list(COLOURS)))
        img[:] = COLOURS[name]
        background = np.array(COLOURS[name], np.float32)
        horizon, place = 0.95, f"on a plain {name} background"

    count = int(rng.integers(1, 5))
    objects = []
    for slot in rng.permutation(count):  # one horizontal slot each, so objects overlap little
        s = rng.uniform(0.32, 0.5) if count < 3 else rng.uniform(0.22, 0.34)
        cx = np.clip((slot + rng.uniform(0.3, 0.7)) / count, s / 2, 1 - s / 2)
        base = horizon + rng.uniform(0.02, 0.25) if kind == "landscape" else rng.uniform(0.3 + s, horizon)
        objects.append((min(base, 0.97), cx, s, str(rng.choice(SHAPES))))
    words = []
    for base, cx, s, shape in sorted(objects):  # nearer (lower) objects are drawn last, on top
        colour = _contrasting(rng, background, TREE_COLOURS if shape == "tree" else tuple(COLOURS))
        _draw_object(cv, x, y, shape, cx, base, s, colour, rng)
        words.append(_article(f"{colour} {shape}"))
    return _finish(img, ss), f"{_join(words)} {place}"


# ----------------------------------------------------------------------------------------------- photos
# Photo-like colour fields, so the autoencoder learns natural-image colour statistics: the textures and scenes above
# are saturated palettes and flat outlined colours, and an autoencoder trained on them alone turns a grey photo
# purple. Each image is smooth luminance and colour variation (flat, gradient, blotchy field or a soft or hard
# split such as a horizon or a wall edge), shading and film grain, in colours drawn as natural images have them:
# hues crowd around earth/skin orange, foliage green and sky blue, saturation is mostly low, any lightness.
# PHOTO_KINDS set the saturation and come in equal shares (item i is PHOTO_KINDS[i % 3]): a third exactly grey
# (R = G = B), a third muted (HSV saturation <= 0.15), a third in natural colour.

PHOTO_KINDS: tuple[str, ...] = ("grey", "muted", "colour")
_NATURAL_HUES = np.array([0.07, 0.25, 0.58], dtype=np.float32)  # orange-brown, foliage green, sky blue (HSV hue)
PHOTO_LAYOUTS: tuple[str, ...] = ("flat", "gradient", "field", "split")


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(k, 3) HSV in [0, 1] -> (k, 3) RGB in 0-255 (the standard hexcone formula)."""
    h, s, v = hsv[:, 0:1] * 6.0, hsv[:, 1:2], hsv[:, 2:3]
    k = (np.array([5.0, 3.0, 1.0], np.float32) + h) % 6.0
    return 255.0 * (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _photo_colours(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` related colours (count, 3) for one photo: a shared hue (sometimes one contrasting), any lightness."""
    base = rng.choice(_NATURAL_HUES) + rng.normal(0, 0.05) if rng.random() < 0.75 else rng.random()
    hue = (base + rng.normal(0, 0.04, count) + (rng.random(count) < 0.3) * rng.uniform(0.2, 0.8, count)) % 1.0
    saturation = {"grey": np.zeros(count), "muted": rng.uniform(0, 0.15, count),
                  "colour": np.clip(rng.beta(1.5, 3.0, count), 0, 0.9)}[kind]
    value = 0.03 + 0.94 * rng.beta(1.3, 1.3, count)
    return _hsv_to_rgb(np.stack([hue, saturation, value], axis=1).astype(np.float32))


def make_photo(size: int, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A photo-like colour field of saturation `kind` (see PHOTO_KINDS) and its caption, e.g. 'a grey photo'."""
    _check_size(size)
    kind = kind or str(rng.choice(PHOTO_KINDS))
    if kind not in PHOTO_KINDS:
        raise UserError(f"unknown photo kind {kind!r}; choose from {', '.join(PHOTO_KINDS)}")
    x, y = _grid(size)
    colours = _photo_colours(kind, 3, rng)
    layout = str(rng.choice(PHOTO_LAYOUTS))
    if layout == "flat":
        img = np.broadcast_to(colours[0], (size, size, 3)).astype(np.float32)
    elif layout == "gradient":
        u, _ = _rotate(x, y, rng.uniform(0, 2 * np.pi))
        img = _ramp(u / 1.42 + 0.5, colours[: rng.integers(2, 4)])
    elif layout == "field":
        field = sum(0.5**o * _value_noise(size, int(rng.integers(2, 4)) * 2**o, rng) for o in range(3))
        img = _ramp((field - field.min()) / (np.ptp(field) + 1e-6), colours)
    else:
        u, _ = _rotate(x, y, rng.uniform(0, 2 * np.pi))
        edge = 1.0 / (1.0 + np.exp(-(u - rng.uniform(-0.3, 0.3)) * size / rng.uniform(0.5, 8.0)))
        img = colours[0] * (1 - edge[..., None]) + colours[1] * edge[..., None]
    shading = 1.0 + rng.uniform(0, 0.3) * (_value_noise(size, int(rng.integers(2, 6)), rng) - 0.5)
    grain = rng.normal(0, rng.uniform(0, 8), (size, size, 1))  # the same on R, G, B: grey grain stays grey
    img = np.clip(img * shading[..., None] + grain + 0.5, 0, 255).astype(np.uint8)
    return img, f"a {kind} photo"


# --------------------------------------------------------------------------------------------- datasets


def _item_rng(seed: int, index: int) -> np.random.Generator:
    # A per-item stream derived from (seed, index) only: any item can be made in any order, in any worker.
    return np.random.default_rng([seed, index])


class ProceduralTextures(Dataset):
    """`count` textures; item i has family `families[i % len(families)]` (balanced classes), a palette and
    parameters drawn from the (seed, i) stream. label = index in TEXTURE_FAMILIES."""

    def __init__(self, count: int, size: int = 64, seed: int = 0, families: Sequence[str] | None = None):
        self.families = tuple(families) if families else TEXTURE_FAMILIES
        unknown = [f for f in self.families if f not in _FAMILIES]
        if unknown:
            raise UserError(f"unknown texture families {unknown}; choose from {', '.join(TEXTURE_FAMILIES)}")
        _check_size(size)
        self.count, self.size, self.seed = count, size, seed
        self.class_names = list(TEXTURE_FAMILIES)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = _item_rng(self.seed, index)
        family = self.families[index % len(self.families)]
        palette = str(rng.choice(list(PALETTES)))
        image = make_texture(family, palette, self.size, rng)
        return {"image": array_to_tensor(image), "caption": texture_caption(family, palette),
                "label": TEXTURE_FAMILIES.index(family), "path": ""}


class _KindCycle(Dataset):
    """`count` images of `make(size, rng, kind)`; item i has kind `kinds[i % len(kinds)]` (equal shares) and is
    drawn from the (seed, i) stream. label = index in `kinds`."""

    kinds: tuple[str, ...]
    make: Callable[[int, np.random.Generator, str], tuple[np.ndarray, str]]

    def __init__(self, count: int, size: int = 64, seed: int = 0):
        _check_size(size)
        self.count, self.size, self.seed = count, size, seed
        self.class_names = list(self.kinds)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.count:
            raise IndexError(index)
        kind = self.kinds[index % len(self.kinds)]
        image, caption = type(self).make(self.size, _item_rng(self.seed, index), kind)
        return {"image": array_to_tensor(image), "caption": caption, "label": self.kinds.index(kind), "path": ""}


class ProceduralScenes(_KindCycle):
    """Content scenes (`make_scene`), the SCENE_KINDS in turn. label = index in SCENE_KINDS."""

    kinds, make = SCENE_KINDS, make_scene


class ProceduralPhotos(_KindCycle):
    """Photo-like colour fields (`make_photo`): grey, muted and natural colour in equal shares (PHOTO_KINDS in
    turn). label = index in PHOTO_KINDS."""

    kinds, make = PHOTO_KINDS, make_photo
