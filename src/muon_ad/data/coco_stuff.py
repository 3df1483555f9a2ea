"""COCO-Stuff 2017: content photos, optional stuff+thing label maps, and COCO captions when present.

Layout (as the cocostuff repository and cocodataset.org ship it; only the images are required):

    root/images/<split>/*.jpg                             (or root/<split>/*.jpg)
    root/stuffthingmaps_trainval2017/<split>/*.png        label maps: value = COCO category id - 1, 255 = unlabeled
    root/annotations/stuff_<split>.json                   COCO-format stuff segments, used if there are no PNG maps
    root/annotations/captions_<split>.json                COCO captions; the first caption of each image is used

Masks from the JSON use the same convention as the PNG maps (category id - 1, 255 where nothing is
annotated). Its segments are decoded here without pycocotools: compressed RLE (what COCO-Stuff uses),
uncompressed RLE and polygons. The PNG maps are faster to load and are the recommended source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from muon_ad.data.folders import ImageFileDataset, existing_dir, list_images
from muon_ad.data.images import open_image, resize_crop
from muon_ad.errors import UserError

SPLITS = ("train2017", "val2017")
UNLABELED = 255


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read COCO annotations {path}: {e}") from None


def rle_counts(counts: str | bytes | list[int]) -> list[int]:
    """Run lengths of a COCO RLE. A list is already uncompressed; a string is COCO's compressed form:
    each run is a variable-length group of 6-bit chars (5 data bits, 1 'more' bit), and runs after
    the second are stored as differences to the run two before (the port of pycocotools' rleFrString)."""
    if isinstance(counts, list):
        return counts
    data = counts.encode() if isinstance(counts, str) else counts
    runs: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def decode_segmentation(seg: dict | list, height: int, width: int) -> np.ndarray:
    """COCO segmentation (RLE dict or list of polygons) -> bool mask (height, width)."""
    if isinstance(seg, dict):
        runs = rle_counts(seg["counts"])
        h, w = seg.get("size", (height, width))
        values = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)  # runs alternate 0s and 1s, 0s first
        flat = np.zeros(h * w, dtype=bool)
        flat[: len(values)] = values[: h * w]
        return flat.reshape(w, h).T  # RLE runs down columns (Fortran order)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in seg:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
    return np.asarray(canvas, dtype=bool)


class COCOStuff(ImageFileDataset):
    """COCO-Stuff images as content: caption = first COCO caption ("" if none), label = -1.
    with_masks=True adds "mask": LongTensor (size, size), resized with nearest neighbour, same crop as the image."""

    def __init__(self, root: str | os.PathLike, split: str = "train2017", size: int = 256, with_masks: bool = False):
        if split not in SPLITS:
            raise UserError(f"COCO-Stuff split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = existing_dir(root, "COCO-Stuff")
        image_dir = _first_existing(self.root / "images" / split, self.root / split)
        if image_dir is None:
            raise UserError(f"no COCO-Stuff images: expected {self.root}/images/{split}/ or {self.root}/{split}/")
        paths = list_images(image_dir)
        self.with_masks = with_masks
        self.mask_dir = self.stuff_json = None
        if with_masks:
            self.mask_dir = _first_existing(self.root / "stuffthingmaps_trainval2017" / split)
            if self.mask_dir is not None:
                paths = [p for p in paths if (self.mask_dir / f"{p.stem}.png").is_file()]
            else:
                self.stuff_json = self._index_stuff_json(split)
                paths = [p for p in paths if p.name in self.stuff_json]
            if not paths:
                raise UserError(f"no COCO-Stuff images under {image_dir} have stuff annotations")
        super().__init__(paths, size, captions=self._captions(split, paths), root=image_dir)

    def _captions(self, split: str, paths: list[Path]) -> list[str]:
        path = self.root / "annotations" / f"captions_{split}.json"
        if not path.is_file():
            return [""] * len(paths)
        data = _read_json(path)
        names = {img["id"]: img["file_name"] for img in data.get("images", [])}
        first: dict[str, str] = {}
        for ann in data.get("annotations", []):
            first.setdefault(names.get(ann["image_id"], ""), ann["caption"].strip())
        return [first.get(p.name, "") for p in paths]

    def _index_stuff_json(self, split: str) -> dict[str, tuple[int, int, list]]:
        """{file name: (height, width, [(category id, segmentation), ...])} from stuff_<split>.json."""
        path = self.root / "annotations" / f"stuff_{split}.json"
        if not path.is_file():
            raise UserError(f"with_masks needs {self.root}/stuffthingmaps_trainval2017/{split}/ or {path}")
        data = _read_json(path)
        by_id = {img["id"]: (img["file_name"], img["height"], img["width"], []) for img in data.get("images", [])}
        for ann in data.get("annotations", []):
            if ann["image_id"] in by_id:
                by_id[ann["image_id"]][3].append((ann["category_id"], ann["segmentation"]))
        return {name: (h, w, segs) for name, h, w, segs in by_id.values()}

    def _label_map(self, path: Path) -> Image.Image:
        if self.mask_dir is not None:
            # open_image checks and decodes it like any image (a broken map skips the item); no RGB conversion.
            return open_image(self.mask_dir / f"{path.stem}.png", min_size=1)
        h, w, segments = self.stuff_json[path.name]
        labels = np.full((h, w), UNLABELED, dtype=np.uint8)
        for category, seg in segments:
            labels[decode_segmentation(seg, h, w)] = category - 1
        return Image.fromarray(labels)

    def load(self, i: int, rgb: Image.Image) -> dict:
        item = super().load(i, rgb)
        if self.with_masks:
            mask = resize_crop(self._label_map(self.paths[i]), self.size, Image.NEAREST)
            item["mask"] = torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())
        return item
