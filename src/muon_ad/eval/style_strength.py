"""Did a stylisation take on its style, and did it keep its content? Measures an identity map cannot pass.

FID-domain against the style images alone rewards nothing in particular at small N, and SSIM alone rewards
copying the content: the identity map (output = content) keeps the content perfectly and scores a finite
FID. So style is judged three ways, each *per pair* where it can be, against the pair's own style:
- style_fid / style_kid: FID-domain / KID-domain of the outputs against the style images (distributions);
- palette_hit / family_hit: how often the recognition judges (`eval.recognition`) name an output with its
  own style's palette and texture family (chance: 1/8 and 1/12);
- gram_distance: relative distance between the Gram matrices of the output's and its style's intermediate
  features in the FID-domain network, averaged over its stages (0: the style's statistics; ~1: unrelated).
Content kept is SSIM to the content and `edge_score`, which looks only at where edges are, not at colour.
Texture (`eval.texture`): the family judge is the headline, and `copy_score` tells a texture drawn from one pasted;
`passes_texture_bar` asks for both (a recolouring fails the first, an overlay of the style image the second).

`style_strength_ratio` puts a model between the two reference rows of the same run and pairs: 0 is the
identity map's style FID, 1 is optimisation-based AD's. The style bar is half of AD's move (`STYLE_BAR`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from muon_ad.eval.domain_features import DomainFeatures
from muon_ad.eval.recognition import accuracy, judge
from muon_ad.eval.stylization import evaluate_stylized
from muon_ad.eval.texture import block_energy, copy_score, pearson

STYLE_BAR = 0.5  # a stylisation must move at least half as far toward its styles as AD does
# Texture drawn: the family judge names at least FAMILY_BAR of the outputs' own style family (chance 1/12; what the
# identity map, a colour transfer, an overlay and AD score: docs/measurements.md, "Student v2"), and no more than
# COPY_LIMIT of the style's fine structure is pasted where the style image has it.
FAMILY_BAR = 0.4
COPY_LIMIT = 0.1

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def palette_family_hits(images: Tensor, style_labels: dict[str, list[str]], judges: dict[str, DomainFeatures]) -> dict[str, float]:
    """Fraction of outputs each judge names with the label of the output's *own* style ({judge: rate})."""
    scores = accuracy(judge(judges, images), style_labels)
    return {name: scores[name] for name in judges}


def gram_matrices(feature_net: DomainFeatures, images: Tensor) -> list[Tensor]:
    """Per stage of `feature_net`, each image's (C, C) Gram matrix of its feature map (mean over positions)."""
    return [torch.einsum("bchw,bdhw->bcd", m, m) / (m.shape[-2] * m.shape[-1]) for m in feature_net.stage_maps(images)]


@torch.no_grad()
def gram_distance(images: Tensor, styles: Tensor, feature_net: DomainFeatures) -> float:
    """Mean over pairs and stages of ||G(image i) - G(style i)|| / ||G(style i)|| (Frobenius norms).

    Relative per stage, so each stage counts alike whatever the scale of its activations."""
    feature_net = feature_net.eval()
    per_stage = [(gi - gs).flatten(1).norm(dim=1) / gs.flatten(1).norm(dim=1).clamp_min(1e-12)
                 for gi, gs in zip(gram_matrices(feature_net, images.float()), gram_matrices(feature_net, styles.float()))]
    return float(torch.stack(per_stage).mean())


def edge_maps(images: Tensor) -> Tensor:
    """(N, H-2, W-2) Sobel gradient magnitudes of each image with every channel standardised on its own.

    Standardising each channel (zero mean, unit spread over the image) removes any per-channel gain and
    offset, and the magnitude sums over channels, so a recolouring that keeps the edges keeps this map."""
    x = images.float()
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    kernels = torch.stack([_SOBEL, _SOBEL.T])[:, None]  # d/dx, d/dy
    grads = F.conv2d(x.flatten(0, 1)[:, None], kernels).unflatten(0, x.shape[:2])  # (N, C, 2, H-2, W-2)
    return grads.square().sum(dim=(1, 2)).sqrt()


def edge_score(images: Tensor, contents: Tensor) -> float:
    """Mean over pairs of the Pearson correlation between the edge maps of image i and content i.

    1: edges exactly where the content has them (whatever the colours); ~0: unrelated structure."""
    return float(pearson(edge_maps(images), edge_maps(contents)).mean())


def style_strength_ratio(style_fid_identity: float, style_fid_ad: float, style_fid_model: float) -> float:
    """(identity − model) / (identity − AD): 0 for the identity map, 1 at AD's level; NaN when AD does not
    beat the identity map, for then there is no scale to measure against."""
    gap = style_fid_identity - style_fid_ad
    return (style_fid_identity - style_fid_model) / gap if gap > 0 else float("nan")


def passes_texture_bar(family_hit: float, copy: float) -> bool:
    """Whether outputs draw their style's texture: the family judge names it, and it is not the style pasted."""
    return family_hit >= FAMILY_BAR and copy <= COPY_LIMIT


def passes_style_bar(ratio: float) -> bool:
    """Whether a stylisation's style_strength_ratio reaches `STYLE_BAR` (NaN never does)."""
    return ratio >= STYLE_BAR


def score_stylization(
    images: Tensor, contents: Tensor, styles: Tensor, style_labels: dict[str, list[str]], feature_net: DomainFeatures,
    judges: dict[str, DomainFeatures], kid_subsets: int = 100, block_period: int = 4,
) -> dict[str, float]:
    """Every style, texture and content score of outputs `images[i]` for pairs (contents[i], styles[i]), in [-1, 1];
    `block_energy` at `block_period` (a student's stem stride)."""
    base = evaluate_stylized(images, contents, styles, feature=feature_net, kid_subsets=kid_subsets)
    hits = palette_family_hits(images, style_labels, judges)
    return {"style_fid": base["fid_domain"], "style_kid": base["kid_domain_mean"],
            "palette_hit": hits["palette"], "family_hit": hits["family"],
            "gram_distance": gram_distance(images, styles, feature_net), "copy_score": copy_score(images, styles),
            "block_energy": block_energy(images, block_period),
            "ssim": base["ssim"], "edge_score": edge_score(images, contents)}
