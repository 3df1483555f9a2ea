"""The validation layer: every user-supplied value checked before any work, each failure one `UserError` line.

Commands, config dataclasses (`__post_init__`, which YAML, command-line overrides and JSON configs in model
folders all go through) and savers call these, so a bad value is refused the same way wherever it comes from.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from muon_ad.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def within(name: str, value: int | float, low: float = -math.inf, high: float = math.inf, above: bool = False) -> None:
    """`value` is a finite number in [low, high] (in (low, high] when `above`); NaN is refused too, which every
    comparison would let through."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (above and value == low):
        bound = (f"> {low}" if above else f"≥ {low}") if high == math.inf else f"in {'(' if above else '['}{low}, {high}]"
        raise UserError(f"{name} must be a finite number {bound}, got {value!r}")


def fields_within(prefix: str, config: Any, names: Iterable[str], low: float, high: float = math.inf,
                  above: bool = False) -> None:
    """`within` for several fields of a config dataclass, named `prefix.field` in the message."""
    for field in names:
        within(f"{prefix}.{field}", getattr(config, field), low, high, above)


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise UserError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def device(name: str, value: str) -> None:
    """A torch device this machine has: cpu, or cuda[:N] when CUDA is available."""
    kind, _, index = value.partition(":")
    one_of(name, kind, ("cpu", "cuda"))
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"{name}={value}: CUDA is not available on this machine (use cpu)")
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(f"{name}={value}: no such CUDA device (this machine has {torch.cuda.device_count()})")


def writable_output(name: str, path: str | os.PathLike) -> None:
    """`path` (a file or folder to be written) can be created: its nearest existing parent is a writable folder."""
    path = Path(path)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{name} {path}: not writable")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{name} {path}: {parent} is a file, not a folder")
    # /proc and /sys look writable to root, but take no ordinary files
    if not os.access(parent, os.W_OK | os.X_OK) or parent.resolve().parts[1:2] in (("proc",), ("sys",)):
        raise UserError(f"{name} {path}: cannot write in {parent}")


def replaceable_folder(name: str, path: str | os.PathLike, marker: str) -> None:
    """`path`, a folder a command writes whole (a previous one is replaced), can be written without destroying
    anything else: it is new, empty, or a previous output of the command (it holds `marker`); never a file."""
    writable_output(name, path)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{name} {path}: is a file; give a folder (the output is a folder)")
    if path.is_dir() and not (path / marker).exists() and any(path.iterdir()):
        raise UserError(f"{name} {path}: holds files that are not an earlier output of this command (no {marker}), "
                        "and the folder would be replaced whole; choose a new or empty folder")


def fits_memory(what: str, nbytes: float, share: float = 0.8) -> None:
    """Refuse a request whose estimated memory exceeds `share` of this machine's RAM, before allocating it."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > share * total:
        raise UserError(f"{what} needs about {nbytes / 2**30:.1f} GiB, more than this machine's "
                        f"{total / 2**30:.1f} GiB of memory allows")


def finite_tensors(what: str, tensors: Mapping[str, Any]) -> None:
    """Every floating tensor of `tensors` is finite: nothing NaN or infinite is ever saved as a model or image."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise UserError(f"refusing to save {what}: '{key}' holds NaN or infinite values "
                            "(training diverged: lower the learning rate)")


def image_file(name: str, path: str | os.PathLike, min_size: int = 16) -> tuple[int, int]:
    """`path` is an image file PIL can read, at least `min_size` px on its short side: its (width, height) from the
    header, without decoding it or importing torch, so a wrong path is answered before any model loads. (A file
    broken past its header still fails later, in one line, when it is decoded.) The reasons are those a dataset
    counts (`data.images.SKIP_REASONS`)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{name} {path}: unreadable image (no such file)")
    try:
        with Image.open(path) as img:
            size = img.size
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"{name} {path}: unreadable image ({type(error).__name__})") from None
    if min(size) < min_size:
        raise UserError(f"{name} {path}: too small image ({size[0]}x{size[1]} < {min_size} px)")
    return size


def fit_size(width: int, height: int, short_side: int, multiple: int) -> tuple[int, int]:
    """(width, height) scaled to `short_side` on the short side, each rounded to the nearest `multiple`."""
    scale = short_side / min(width, height)
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (width, height))


def multiple_of(name: str, values: Iterable[int], multiple: int) -> None:
    """Each of `values` is a positive multiple of `multiple`; the error names the nearest valid values."""
    values = tuple(values)
    if any(v <= 0 or v % multiple for v in values):
        nearest = " ".join(str(max(multiple, round(v / multiple) * multiple)) for v in values)
        raise UserError(f"{name} {' '.join(map(str, values))}: sides must be multiples of {multiple} for this model; "
                        f"nearest valid: {name} {nearest}")


def image_folder(name: str, folder: str | os.PathLike, at_least: int = 1) -> tuple[list[Path], int]:
    """(The image files of `folder`, sorted by name, whose header PIL can read; how many image files it holds): the
    unreadable ones are counted in one line
    (their pixel data is checked when they are decoded). Fewer than `at_least` readable is a one-line error. Cheap
    (headers only, no torch), so a wrong folder is answered before a feature network trains."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{name} {folder}: folder not found")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    usable, bad = [], []
    for file in files:
        try:
            image_file(name, file)
            usable.append(file)
        except UserError:
            bad.append(file.name)
    if bad:
        logging.getLogger("muon_ad").warning("%s %s: %d of %d image files readable, skipping %d (first: %s)", name,
                                             folder, len(usable), len(files), len(bad), bad[0])
    if len(usable) < at_least:
        raise UserError(f"{name} {folder}: {len(usable)} readable image files, at least {at_least} needed")
    return usable, len(files)
