"""Datasets over folders of image files: any images (+ captions), DTD-style textures, WikiArt-style styles.

Bad files are found when an item is read, not by a scan at construction: a header scan of 100k files
costs minutes and still misses truncated pixel data, which only a full decode reveals. A bad file is
logged once, marked in `dataset.summary` (shared by DataLoader workers) and its item is `None`: it is
skipped, never replaced by another file (which would count that file twice in an epoch). A DataLoader
drops the `None`s with `collate_fn=collate_usable`; `report()` logs the one-line summary.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset, default_collate

from muon_ad.data.images import BadImageError, SkipSummary, is_image_file, open_image, to_rgb, to_tensor
from muon_ad.errors import UserError

log = logging.getLogger(__name__)


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted; hidden files and folders (.cache, temp files) left out."""
    return sorted(
        p for p in folder.rglob("*")
        if is_image_file(p) and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def existing_dir(root: str | os.PathLike, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{what} folder not found: {root}")
    return root


class ImageFileDataset(Dataset):
    """Items {"image", "caption", "label", "path"} from a list of image files; bad files are skipped."""

    min_size = 16  # px on the short side; smaller files are skipped as "too small"

    def __init__(self, paths: Sequence[Path], size: int, captions: Sequence[str] | None = None,
                 labels: Sequence[int] | None = None, root: Path | None = None):
        if not paths:
            raise UserError(f"no image files found under {root}")
        if size < 1:
            raise UserError(f"image size must be positive, got {size}")
        self.paths, self.size = list(paths), size
        self.captions = list(captions) if captions is not None else [""] * len(self.paths)
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.summary = SkipSummary(len(self.paths))
        self.folder = root

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict | None:
        """The item of file `index`, or None when that file is unusable (counted in `summary`). Why None rather than
        raise: one bad file in 100k must not end an epoch; rather than another file: that would duplicate it. Only
        if every file is bad is that an error (the user's, so a UserError)."""
        if not 0 <= index < len(self.paths):
            raise IndexError(index)
        if self.summary.is_bad(index):
            return None
        try:
            img = open_image(self.paths[index], self.min_size, draft_size=self.size)
            item = self.load(index, to_rgb(img))
        except (BadImageError, OSError, ValueError) as e:  # ValueError: e.g. a mode PIL cannot convert
            self.summary.mark_bad(index, getattr(e, "reason", "unreadable"))
            log.warning("skipping %s", e if isinstance(e, BadImageError) else f"{self.paths[index]}: {e}")
            if sum(self.summary.skipped.values()) == len(self.paths):
                raise UserError(f"no usable image among {len(self.paths)} files (first: {self.paths[0]}); "
                                f"{self.summary}") from None
            return None
        self.summary.mark_ok(index, converted=img.mode != "RGB")
        return item

    def report(self) -> str:
        """Log and return the one-line summary: files read, skipped (and why), converted."""
        line = f"{self.folder}: {self.summary}" if self.folder is not None else str(self.summary)
        (log.warning if self.summary.skipped else log.info)("%s", line)
        return line

    def load(self, i: int, rgb: Image.Image) -> dict:
        """The item for file i, given its decoded RGB image. Subclasses add fields (e.g. COCO masks)."""
        return {"image": to_tensor(rgb, self.size), "caption": self.captions[i], "label": self.labels[i],
                "path": str(self.paths[i])}


def collate_usable(items: list[dict | None]) -> dict | None:
    """`default_collate` of a batch's usable items (None: a skipped file); None when no item of the batch is usable."""
    usable = [item for item in items if item is not None]
    return default_collate(usable) if usable else None


def read_captions(path: str | os.PathLike) -> dict[str, str]:
    """{file: caption} from JSONL ({"file"|"image"|"file_name": ..., "caption"|"text": ...} per line)
    or CSV (header with a file/image column and a caption/text column)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"captions file not found: {path}")
    file_keys, text_keys = ("file", "image", "file_name", "path"), ("caption", "text")

    def pick(row: dict, keys: tuple[str, ...], where: str) -> str:
        for k in keys:
            if k in row:
                return str(row[k])
        raise UserError(f"{where}: needs one of the fields {', '.join(keys)}")

    captions = {}
    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            for n, row in enumerate(csv.DictReader(f), start=2):
                captions[pick(row, file_keys, f"{path}:{n}")] = pick(row, text_keys, f"{path}:{n}")
        else:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not a JSON line ({e.msg})") from None
                captions[pick(row, file_keys, f"{path}:{n}")] = pick(row, text_keys, f"{path}:{n}")
    return captions


class ImageFolder(ImageFileDataset):
    """Every image under `root` (recursive), with captions matched by relative path, else by file name."""

    def __init__(self, root: str | os.PathLike, size: int, captions: str | os.PathLike | None = None):
        self.root = existing_dir(root, "image")
        paths = list_images(self.root)
        texts, self.orphan_captions = None, []
        if captions is not None:
            table = {Path(k).as_posix(): v for k, v in read_captions(captions).items()}  # "./a.png" -> "a.png"
            by_name = {Path(k).name: v for k, v in table.items()}
            texts = [table.get(p.relative_to(self.root).as_posix(), by_name.get(p.name, "")) for p in paths]
            present = {p.relative_to(self.root).as_posix() for p in paths} | {p.name for p in paths}
            self.orphan_captions = [k for k in table if k not in present and Path(k).name not in present]
            log.info("%s: captions for %d of %d images", captions, sum(map(bool, texts)), len(paths))
            if self.orphan_captions:  # a typo or a deleted file: said, not dropped silently
                log.warning("%s: %d caption(s) name no file under %s (first: %s)", captions,
                            len(self.orphan_captions), self.root, self.orphan_captions[0])
        super().__init__(paths, size, captions=texts, root=self.root)


def class_folders(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """(sorted class names, image paths, label per path) for root/<class>/... ; empty classes are dropped."""
    classes, paths, labels = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = list_images(folder)
        if files:
            paths += files
            labels += [len(classes)] * len(files)
            classes.append(folder.name)
    if not classes:
        raise UserError(f"no class folders with images in {root} (expected {root}/<class>/<image files>)")
    return classes, paths, labels


def _words(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip().lower()


class TextureFolder(ImageFileDataset):
    """Textures in DTD layout: root/images/<class>/*.jpg (as DTD ships) or root/<class>/*.
    label = index of the class in sorted order; caption = the class name ("banded", "honeycombed")."""

    def __init__(self, root: str | os.PathLike, size: int):
        root = existing_dir(root, "texture")
        self.root = root / "images" if (root / "images").is_dir() else root
        self.class_names, paths, labels = class_folders(self.root)
        captions = [_words(self.class_names[label]) for label in labels]
        super().__init__(paths, size, captions=captions, labels=labels, root=self.root)


class StyleFolder(ImageFileDataset):
    """Paintings in WikiArt layout: root/<Style_Name>/<artist-name>_<title>.jpg.
    label = index of the style in sorted order; caption = "a painting in the style of <style>[ by <artist>]"."""

    def __init__(self, root: str | os.PathLike, size: int):
        self.root = existing_dir(root, "style")
        self.class_names, paths, labels = class_folders(self.root)
        captions = []
        for path, label in zip(paths, labels):
            caption = f"a painting in the style of {_words(self.class_names[label])}"
            if "_" in path.stem:  # WikiArt names files <artist>_<title>
                caption += f" by {_words(path.stem.split('_')[0])}"
            captions.append(caption)
        super().__init__(paths, size, captions=captions, labels=labels, root=self.root)
