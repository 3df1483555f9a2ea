"""Robust image I/O shared by every dataset and by anything that writes images.

Real folders contain grayscale scans, CMYK JPEGs, palette PNGs with transparency, 16-bit TIFFs, tiny
thumbnails and half-downloaded files. `open_image` turns each of those into either a decoded image or a
`BadImageError` whose `reason` a `SkipSummary` can count, so a bad file costs one log line, never an epoch.
Tensors follow the project convention: float (3, H, W) in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from muon_ad.checks import IMAGE_EXTENSIONS, finite_tensors
from muon_ad.errors import UserError
from muon_ad.io import write_atomic


# Why a file was skipped. The order is the display order of `SkipSummary`.
SKIP_REASONS = ("unreadable", "truncated", "too small")


class BadImageError(UserError):
    """An image file that cannot be used; `reason` is one of SKIP_REASONS."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        super().__init__(f"{path}: {reason} image ({detail})")
        self.reason = reason


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def open_image(path: str | os.PathLike, min_size: int = 16, draft_size: int | None = None) -> Image.Image:
    """Decode `path` fully, in its own mode, upright (EXIF orientation applied).

    `draft_size` lets the JPEG decoder downscale by 2/4/8 while decoding (never below draft_size on the
    short side), which makes loading a 640 px COCO photo for a 64 px model several times cheaper.
    Raises BadImageError: "unreadable" (not an image / missing), "too small" (short side < min_size,
    checked from the header before decoding), "truncated" (header fine, pixel data broken).
    """
    try:
        img = Image.open(path)
    except Exception as e:  # PIL raises several unrelated types for "not an image"
        raise BadImageError(path, "unreadable", type(e).__name__) from e
    with img:
        if min(img.size) < min_size:
            raise BadImageError(path, "too small", f"{img.size[0]}x{img.size[1]} < {min_size} px")
        if draft_size is not None and img.format == "JPEG":
            # draft() scales each side by the same power of two; ask for the box that keeps the short side.
            scale = draft_size / min(img.size)
            img.draft(None, (round(img.size[0] * scale), round(img.size[1] * scale)))
        try:
            img.load()
        except Exception as e:
            raise BadImageError(path, "truncated", str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        ImageOps.exif_transpose(img, in_place=True)  # phone photos store rotation as a tag
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha is composited on white, 16/32-bit and float images are
    rescaled to 8 bits (PIL's own convert would clip them to white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        a = np.asarray(img, dtype=np.float64)
        if a.max(initial=0.0) <= 1.0 and img.mode == "F":
            a = a * 255.0  # float images are usually in [0, 1]
        elif a.max(initial=0.0) > 255.0:
            a = a / 257.0  # 16-bit data
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK (PIL undoes Adobe's inverted CMYK), YCbCr, ...


def load_rgb(path: str | os.PathLike, min_size: int = 16, draft_size: int | None = None) -> Image.Image:
    """Read any image file as 8-bit RGB, or raise BadImageError (a UserError) with a one-line message."""
    img = open_image(path, min_size, draft_size)
    try:
        return to_rgb(img)
    except Exception as e:
        raise BadImageError(path, "unreadable", f"cannot convert mode {img.mode} to RGB") from e


def resize_crop(img: Image.Image, size: int, resample: int = Image.BICUBIC) -> Image.Image:
    """Resize so the short side is `size`, then take the centered size x size square.
    Pass Image.NEAREST for label maps so no new label values are invented."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample, reducing_gap=None if resample == Image.NEAREST else 3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> float (3, H, W) in [-1, 1]. Done in numpy on purpose: the same torch op would run
    on torch's intra-op thread pool, whose threads spin after it; measured on a busy 2-core machine, that
    made a 256 px procedural item cost 4x more CPU."""
    a = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)
    a /= 127.5  # divide, not multiply by 1/127.5: keeps 255 -> exactly 1.0
    a -= 1.0
    return torch.from_numpy(a)


def to_tensor(img: Image.Image | np.ndarray, size: int | None = None) -> torch.Tensor:
    """Image (PIL in any mode, or (H, W, 3) uint8 array) -> float (3, size, size) in [-1, 1], resized on the
    short side and center-cropped; size=None keeps its size."""
    if isinstance(img, Image.Image):
        img = to_rgb(img)
        img = np.asarray(resize_crop(img, size) if size else img)
    elif size:
        img = np.asarray(resize_crop(Image.fromarray(img), size))
    return array_to_tensor(img)


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W) luma (BT.601 weights, on whatever range the values have)."""
    return torch.einsum("nchw,c->nhw", images.float(), images.new_tensor(_LUMA, dtype=torch.float32))


def to_pil(image: torch.Tensor | np.ndarray | Image.Image) -> Image.Image:
    """Any image-like value -> PIL. Tensors are channels-first, (C, H, W) or (1, C, H, W), as in torch;
    arrays channels-last, (H, W, C) or (H, W), as in PIL. Float data is read in the project's [-1, 1]
    convention, integer data as 0..255."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        t = t[0] if t.ndim == 4 and len(t) == 1 else t
        a = (t.float() if t.is_floating_point() else t).numpy()
        a = a.transpose(1, 2, 0) if a.ndim == 3 else a
    else:
        a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"cannot make an image from shape {tuple(image.shape)}")
    if np.issubdtype(a.dtype, np.floating):
        a = (a + 1.0) * 127.5
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def save_image_atomic(image: torch.Tensor | np.ndarray | Image.Image, path: str | os.PathLike) -> Path:
    """Save so that `path` is either the old file or the complete new one, never half written (`io.write_atomic`)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown image extension {path.suffix!r}; use e.g. .png or .jpg")
    if isinstance(image, torch.Tensor):
        finite_tensors(f"the image {path}", {"pixels": image})  # NaN would come out black, with exit 0
    img = to_pil(image)
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = to_rgb(img)
    return write_atomic(path, lambda f: img.save(f, format=fmt))


class SkipSummary:
    """Per-file status of a dataset's files: ok, converted to RGB, or skipped (and why).

    The status lives in a shared-memory tensor (one byte per file) so DataLoader workers, which are
    separate processes, all write to the same table: the summary counts each bad file once, whichever
    worker met it and however many epochs ran, and a file known to be bad is skipped without re-reading.
    """

    _OK, _CONVERTED = 1, 2  # 0 = not read yet; 3 + i = skipped for SKIP_REASONS[i]

    def __init__(self, num_files: int):
        self.status = torch.zeros(num_files, dtype=torch.uint8).share_memory_()

    def mark_ok(self, index: int, converted: bool = False) -> None:
        self.status[index] = self._CONVERTED if converted else self._OK

    def mark_bad(self, index: int, reason: str) -> None:
        self.status[index] = 3 + SKIP_REASONS.index(reason)

    def is_bad(self, index: int) -> bool:
        return int(self.status[index]) >= 3

    @property
    def converted(self) -> int:
        return int((self.status == self._CONVERTED).sum())

    @property
    def skipped(self) -> dict[str, int]:
        counts = torch.bincount(self.status.long(), minlength=3 + len(SKIP_REASONS))
        return {r: int(counts[3 + i]) for i, r in enumerate(SKIP_REASONS) if counts[3 + i]}

    def __str__(self) -> str:
        seen = int((self.status > 0).sum())
        skipped = self.skipped
        text = f"{seen} of {len(self.status)} files read: skipped {sum(skipped.values())}"
        if skipped:
            text += " (" + ", ".join(f"{n} {r}" for r, n in skipped.items()) + ")"
        return text + f", converted {self.converted} to RGB"

