"""Does a teacher draw what it is asked for? Family and palette accuracy of its text-to-image samples.

"Its samples must be recognisably the texture families" made measurable: two small classifiers (the
FID-domain CNN of `domain_features`) are trained on real procedural textures, one to tell the 12
families apart and one the 8 palettes. They then judge samples prompted "<palette words> <family>".
Their accuracy on held-out *real* textures is the ceiling a perfect teacher would reach; chance is
1/12 for families and 1/8 for palettes. The classifiers see only images, never prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from muon_ad.data.procedural import PALETTES, TEXTURE_FAMILIES, ProceduralTextures, palette_words, texture_caption
from muon_ad.eval.domain_features import DomainFeatures, train_domain_features
from muon_ad.models.teacher import Teacher


def real_textures(count: int, size: int, seed: int) -> tuple[Tensor, dict[str, list[str]]]:
    """`count` real procedural textures and their true labels: family name, and palette words (from the caption)."""
    textures = ProceduralTextures(count, size, seed)
    items = [textures[i] for i in range(count)]
    labels = {"family": [TEXTURE_FAMILIES[item["label"]] for item in items],
              "palette": [item["caption"].rsplit(" ", 1)[0] for item in items]}
    return torch.stack([item["image"] for item in items]), labels


def train_judges(count: int, size: int, steps: int, seed: int = 0) -> dict[str, DomainFeatures]:
    """A family classifier and a palette classifier, trained on `count` real textures of `seed`, each also
    seen softened (half resolution and back): a generative model's samples are never as crisp as the
    renderer's, and a judge must score what was drawn, not how sharp it is."""
    images, labels = real_textures(count, size, seed)
    soft = F.interpolate(F.interpolate(images, scale_factor=0.5, mode="bilinear", antialias=True), size=images.shape[-2:],
                         mode="bilinear")
    return {name: train_domain_features([{"image": x, "label": y} for x, y in zip(torch.cat([images, soft]), truth * 2)],
                                        steps=steps, seed=seed, size=size)
            for name, truth in labels.items()}


@torch.no_grad()
def judge(judges: dict[str, DomainFeatures], images: Tensor, batch: int = 256) -> dict[str, list[str]]:
    """The label each judge gives each image ((N,3,H,W) in [-1,1])."""
    verdicts: dict[str, list[str]] = {}
    for name, model in judges.items():
        predicted = torch.cat([model.logits(images[i : i + batch]).argmax(-1) for i in range(0, len(images), batch)])
        verdicts[name] = [model.labels[p] for p in predicted.tolist()]
    return verdicts


def accuracy(verdicts: dict[str, list[str]], truth: dict[str, Sequence[str]]) -> dict[str, float]:
    """Overall accuracy per judge, and per family (`family_<name>`) for the family judge."""
    scores = {name: sum(v == t for v, t in zip(verdicts[name], truth[name])) / len(truth[name]) for name in verdicts}
    for family in dict.fromkeys(truth["family"]):
        rows = [i for i, t in enumerate(truth["family"]) if t == family]
        scores[f"family_{family}"] = sum(verdicts["family"][i] == family for i in rows) / len(rows)
    return scores


def teacher_samples(
    teacher: Teacher, per_family: int, steps: int, guidance_scale: float, seed: int = 0, batch: int = 48,
) -> tuple[Tensor, dict[str, list[str]]]:
    """`per_family` samples of every family, palettes in rotation, and the labels their prompts asked for."""
    palettes = list(PALETTES)
    asked = [(family, palettes[(f + k) % len(palettes)]) for f, family in enumerate(TEXTURE_FAMILIES) for k in range(per_family)]
    prompts = [texture_caption(family, palette) for family, palette in asked]
    images = torch.cat([teacher.sample(prompts[i : i + batch], steps, guidance_scale, seed + i)
                        for i in range(0, len(prompts), batch)])
    return images, {"family": [family for family, _ in asked], "palette": [palette_words(p) for _, p in asked]}
