"""Content and style images for distillation, held in memory at the teacher's resolution.

`window_bank` cuts teacher-size windows from the same sources shown larger: a style's texture as large as a larger
picture has it, for AD targets at the sizes the student runs at.

Content: the built-in scenes, COCO-Stuff, or any image folder. Styles: the built-in textures, WikiArt,
a DTD-style texture folder, or any image folder. Each source becomes an `ImageBank` (uint8, so a step
costs a gather, not a decode) of at most `count` images (a seeded random subset of a larger folder);
its last `val_pairs` images are held out as the fixed validation set. A `PairSet` holds a content and a
style bank with their teacher latents, encoded once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from muon_ad.checks import fields_within
from muon_ad.data import COCOStuff, ImageFolder, ProceduralScenes, ProceduralTextures, StyleFolder, TextureFolder
from muon_ad.data.bank import ImageBank
from muon_ad.errors import UserError
from muon_ad.training.loop import progress_bar

CONTENT_SOURCES = ("scenes", "coco-stuff", "folder")
STYLE_SOURCES = ("textures", "wikiart", "dtd", "folder")


@dataclass
class DistillDataConfig:
    content: str = "scenes"  # scenes | coco-stuff | folder
    content_path: str | None = None  # the dataset root, for all but the built-in sets
    content_count: int = 256  # images kept in memory, validation pairs included
    style: str = "textures"  # textures | wikiart | dtd | folder
    style_path: str | None = None
    style_count: int = 256
    val_pairs: int = 32  # the last val_pairs images of each bank: the fixed validation set
    seed: int = 0

    def __post_init__(self) -> None:
        fields_within("data", self, ("val_pairs",), 1)
        fields_within("data", self, ("content_count", "style_count"), self.val_pairs + 1)


@dataclass
class LabelledBank(ImageBank):
    labels: torch.Tensor  # (N,) int, -1 where the source has no classes

    def split(self, n_val: int) -> tuple[LabelledBank, LabelledBank]:
        """(training images, the last n_val images)."""
        cut = len(self.images) - n_val
        return (LabelledBank(self.images[:cut], self.captions[:cut], self.labels[:cut]),
                LabelledBank(self.images[cut:], self.captions[cut:], self.labels[cut:]))


def open_source(kind: str, path: str | None, count: int, size: int, seed: int, role: str) -> Dataset:
    sources = CONTENT_SOURCES if role == "content" else STYLE_SOURCES
    if kind not in sources:
        raise UserError(f"data.{role}={kind!r}: choose from {', '.join(sources)}")
    if kind == "scenes":
        return ProceduralScenes(count, size, seed)
    if kind == "textures":
        return ProceduralTextures(count, size, seed)
    if path is None:
        raise UserError(f"data.{role}={kind} needs data.{role}_path (the dataset's folder)")
    folders = {"coco-stuff": COCOStuff, "wikiart": StyleFolder, "dtd": TextureFolder, "folder": ImageFolder}
    return folders[kind](path, size=size)


def load_bank(dataset: Dataset, count: int, seed: int, desc: str) -> LabelledBank:
    """At most `count` items of `dataset` (a seeded random subset when it has more) as a bank."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[:count] if len(dataset) > count else range(len(dataset))
    items = [item for i in progress_bar(desc=desc, iterable=order, leave=False) if (item := dataset[int(i)]) is not None]  # None: a bad file
    if hasattr(dataset, "report"):
        dataset.report()  # one line: read, skipped (and why), converted
    if not items:
        raise UserError(f"{desc}: no usable image")
    images = torch.stack([((it["image"] + 1) * 127.5).round().to(torch.uint8) for it in items])
    return LabelledBank(images, [it["caption"] for it in items], torch.tensor([it["label"] for it in items]))


def build_banks(cfg: DistillDataConfig, size: int) -> tuple[LabelledBank, LabelledBank]:
    """(content bank, style bank) of `size` px images."""
    banks = []
    for role, kind, path, count, seed in (("content", cfg.content, cfg.content_path, cfg.content_count, cfg.seed),
                                          ("style", cfg.style, cfg.style_path, cfg.style_count, cfg.seed + 1)):
        if count <= cfg.val_pairs:
            raise UserError(f"data.{role}_count={count} must exceed data.val_pairs={cfg.val_pairs}")
        bank = load_bank(open_source(kind, path, count, size, seed, role), count, seed, f"loading {role}")
        if len(bank.images) <= cfg.val_pairs:
            raise UserError(f"data.{role}: {len(bank.images)} images, but data.val_pairs={cfg.val_pairs} are held out")
        banks.append(bank)
    return banks[0], banks[1]


@dataclass
class PairSet:
    """Images (uint8 banks) and their teacher latents: content and style."""

    content: LabelledBank
    style: LabelledBank
    content_latents: torch.Tensor
    style_latents: torch.Tensor

    @classmethod
    def encode(cls, content: LabelledBank, style: LabelledBank, encode: Callable[[torch.Tensor], torch.Tensor],
               device: torch.device) -> PairSet:
        """The banks with their latents (`encode`: images → latents), encoded once: the VAE is frozen and
        references need no graph."""
        latents = [encode(bank.batch(slice(None)).to(device)) for bank in (content, style)]
        return cls(content, style, *latents)

    @classmethod
    def concat(cls, parts: list[PairSet]) -> PairSet:
        """One set holding every part's images in order (part k's image i is at i + the sizes of the parts before)."""
        def bank(banks: list[LabelledBank]) -> LabelledBank:
            return LabelledBank(torch.cat([b.images for b in banks]), [c for b in banks for c in b.captions],
                                torch.cat([b.labels for b in banks]))
        return cls(bank([p.content for p in parts]), bank([p.style for p in parts]),
                   torch.cat([p.content_latents for p in parts]), torch.cat([p.style_latents for p in parts]))

    def batch(self, content_index: torch.Tensor, style_index: torch.Tensor, device: torch.device):
        """(content images, style images, content latents, style latents) of the pairs at the indices."""
        return (self.content.batch(content_index).to(device), self.style.batch(style_index).to(device),
                self.content_latents[content_index], self.style_latents[style_index])


def window_bank(bank: LabelledBank, size: int, seed: int) -> LabelledBank:
    """One seeded size x size window of every image of `bank`: the teacher's size cut from a larger picture, where a
    style's texture is as large as it is at that picture's size."""
    generator = torch.Generator().manual_seed(seed)
    height, width = bank.images.shape[-2:]
    tops = torch.randint(height - size + 1, (len(bank.images),), generator=generator).tolist()
    lefts = torch.randint(width - size + 1, (len(bank.images),), generator=generator).tolist()
    images = torch.stack([image[:, i : i + size, j : j + size] for image, i, j in zip(bank.images, tops, lefts)])
    return LabelledBank(images, list(bank.captions), bank.labels.clone())

