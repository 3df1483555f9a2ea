"""A bank of the teacher's own stylisations of training pairs: direct per-pair targets for the student.

Measured (issue #11): through the teacher, L_AD, L_KL and L_content give the student's pixels a signal too weak
and noisy to leave the identity map within a CPU budget (style FID-domain of the student = the identity map's
after 96-240 steps). Optimisation-based AD does stylise (its style FID is 5-7x lower), so its outputs on
training pairs are made once, before training (`synthesis.stylize_batch`, a few Adam steps at a high lr), and
the student regresses onto them: L_target = L1(student(content, style), AD(content, style)), weighted into the
style objective. Training pairs are seeded: each training content in turn, each with a random training style;
the validation pairs get a bank of their own, so the held-out L1 to the teacher's stylisation can be the
validation loss of a run trained on targets.

The bank is cached as safetensors (uint8 images, pair indices) with a JSON of the settings it was made with
(and the teacher and data it was made from), so runs that share it (Muon-AD and its AdamW baseline, resumes)
make it once, and a bank made with other settings is rebuilt, never reused.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from muon_ad.distill.data import PairSet
from muon_ad.io import write_text_atomic
from muon_ad.models.teacher import Teacher
from muon_ad.synthesis import stylize_batch
from muon_ad.training import progress_bar

log = logging.getLogger("muon_ad.distill")


@dataclass
class TargetBank:
    content_index: Tensor  # (N,) into the training content bank
    style_index: Tensor  # (N,) into the training style bank
    images: Tensor  # (N, 3, H, W) uint8: the teacher's AD image of pair i

    def __len__(self) -> int:
        return len(self.images)

    def targets(self, pick: Tensor, device: torch.device) -> Tensor:
        """The target images of bank pairs `pick`, as floats in [-1, 1]."""
        return self.images[pick].to(device).float().div(127.5).sub(1.0)


def training_pairs(train: PairSet, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """(content index, style index) of `count` seeded training pairs: each content in turn, each with a random style."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.arange(count) % len(train.content.images),
            torch.randint(len(train.style.images), (count,), generator=generator))


def pairs_by_part(parts: list[PairSet], count: int, seed: int) -> tuple[Tensor, Tensor]:
    """`training_pairs` of every part (count each; content and style from the same part), indexed into
    `PairSet.concat(parts)`."""
    content_index, style_index, content_offset, style_offset = [], [], 0, 0
    for k, part in enumerate(parts):
        contents, styles = training_pairs(part, count, seed + k)
        content_index.append(contents + content_offset)
        style_index.append(styles + style_offset)
        content_offset, style_offset = content_offset + len(part.content.images), style_offset + len(part.style.images)
    return torch.cat(content_index), torch.cat(style_index)


def build_target_bank(
    teacher: Teacher, pairs: PairSet, content_index: Tensor, style_index: Tensor, steps: int, lr: float, path: Path,
    provenance: dict, batch_size: int = 32,
) -> TargetBank:
    """The teacher's AD images of pairs (content_index[i], style_index[i]) of `pairs`: the cached bank at `path` if it
    was made with these settings and pairs (`provenance`: teacher, data), else a new one, cached there."""
    settings = json.loads(json.dumps({"content_index": content_index.tolist(), "style_index": style_index.tolist(),
                                      "steps": steps, "lr": lr, **provenance}))  # as read back: tuples are lists
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == settings:
        return TargetBank(**load_file(str(path)))
    start, images = time.time(), []
    for i in progress_bar(desc="AD targets", iterable=range(0, len(content_index), batch_size), leave=False):
        content, style, _, _ = pairs.batch(content_index[i : i + batch_size], style_index[i : i + batch_size],
                                           teacher.device)
        images.append(stylize_batch(teacher, content, style, steps, lr).cpu())
    bank = TargetBank(content_index, style_index, torch.cat(images).add(1).mul(127.5).round().to(torch.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)  # until the new settings are written, the bank on disk counts as unmade
    save_file({k: v.clone().contiguous() for k, v in vars(bank).items()}, str(path))  # the val bank shares its index
    write_text_atomic(meta, json.dumps(settings))  # written last: a bank without it is remade
    log.info("%d AD targets (%d Adam steps at lr %g) in %.0f s, cached in %s", len(bank), steps, lr,
             time.time() - start, path)
    return bank
