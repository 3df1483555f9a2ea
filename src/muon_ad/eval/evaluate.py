"""One call for the image metrics of a run (what `muon-ad evaluate` reports), and their Markdown table.

FID/KID compare two *distributions* (generated vs real), so the sets need not match one to one. SSIM
and PSNR compare *aligned pairs* (stylised image i vs content image i) and are computed only when such
references are given.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from muon_ad.data.images import BadImageError, SkipSummary, is_image_file, load_rgb, to_tensor
from muon_ad.errors import UserError
from muon_ad.eval.fid import (
    FID_LABELS,
    FeatureExtractor,
    Images,
    extract_features,
    fid_from_features,
    iter_images,
    kid_from_features,
    load_feature_extractor,
)
from muon_ad.eval.quality import psnr, ssim

log = logging.getLogger("muon_ad.eval")

# Below this many images per set, FID's covariance estimate (and KID's subsets) are dominated by sampling noise:
# figures are reported, with a warning, and only comparable between sets of the same size.
MIN_RELIABLE_SAMPLES = 50


def read_images(folder: str | Path) -> list[Tensor | None]:
    """Every image file in `folder`, sorted by name (so pairs line up), as (3,H,W) tensors in [-1,1]; None where a
    file is unreadable, truncated or tiny (skipped and counted: one summary line)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    files = sorted(f for f in folder.iterdir() if is_image_file(f))
    if not files:
        raise UserError(f"no image files in {folder}")
    summary, images = SkipSummary(len(files)), []
    for i, file in enumerate(files):
        try:
            images.append(to_tensor(load_rgb(file)))
            summary.mark_ok(i)
        except BadImageError as error:
            images.append(None)
            summary.mark_bad(i, error.reason)
    if summary.skipped:
        log.warning("%s: %s", folder, summary)
    return images


def load_images(folder: str | Path) -> list[Tensor]:
    """The usable images of `folder` (`read_images` without the skipped ones)."""
    images = [image for image in read_images(folder) if image is not None]
    if not images:
        raise UserError(f"no usable image in {folder}")
    return images


def _as_images(source: str | Path | Images) -> list[Tensor]:
    # A list, because a set is read more than once (features, then SSIM pairs) and may be a generator.
    return load_images(source) if isinstance(source, (str, Path)) else list(iter_images(source))


def _aligned(fake_all: list[Tensor | None], refs: str | Path | Images) -> tuple[list[Tensor], list[Tensor]]:
    """(images, references) as pairs; a pair is dropped when either file of it was skipped, so the rest stay aligned."""
    refs_all = read_images(refs) if isinstance(refs, (str, Path)) else list(iter_images(refs))
    if len(refs_all) != len(fake_all):
        raise UserError(f"SSIM needs aligned pairs: {len(fake_all)} images vs {len(refs_all)} references")
    pairs = [(a, b) for a, b in zip(fake_all, refs_all) if a is not None and b is not None]
    if len(pairs) < len(fake_all):
        log.warning("SSIM/PSNR on %d of %d pairs (a pair with a skipped file is left out)", len(pairs), len(fake_all))
    if not pairs:
        raise UserError("no usable (image, reference) pair for SSIM")
    return [a for a, _ in pairs], [b for _, b in pairs]


def evaluate_images(
    fake: str | Path | Images,
    real: str | Path | Images,
    feature: FeatureExtractor | nn.Module = "domain",
    feature_path: str | Path | None = None,
    pairs_with: str | Path | Images | None = None,
    batch_size: int = 32,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """FID and KID of `fake` against `real`; SSIM and PSNR of `fake[i]` against `pairs_with[i]` if given.

    Sets are folders or tensors in [-1,1]. `feature` is "inception", "domain" (a trained extractor at
    `feature_path`) or a module, which counts as domain features. Keys carry the extractor: "fid" and
    "kid_*" for Inception only, "fid_domain" and "kid_domain_*" otherwise.
    """
    kind = feature if isinstance(feature, str) else "domain"
    extractor = load_feature_extractor(feature, feature_path) if isinstance(feature, str) else feature
    fake_all = read_images(fake) if isinstance(fake, (str, Path)) else list(iter_images(fake))
    pairs = _aligned(fake_all, pairs_with) if pairs_with is not None else None
    if not any(image is not None for image in fake_all):
        raise UserError(f"no usable image in {fake}")
    fake, real = [image for image in fake_all if image is not None], _as_images(real)
    fake_f = extract_features(fake, extractor, batch_size, device)
    real_f = extract_features(real, extractor, batch_size, device)
    suffix = "" if kind == "inception" else "_domain"
    kid_mean, kid_std = kid_from_features(real_f, fake_f, kid_subsets, kid_subset_size, seed)
    smallest = min(len(fake_f), len(real_f))
    metrics: dict = {
        "feature": kind,
        "num_fake": len(fake_f),
        "num_real": len(real_f),
        f"fid{suffix}": fid_from_features(real_f, fake_f),
        f"kid{suffix}_mean": kid_mean,
        f"kid{suffix}_std": kid_std,
    }
    if smallest < MIN_RELIABLE_SAMPLES:
        metrics["warning"] = (f"FID/KID on {smallest} images (fewer than {MIN_RELIABLE_SAMPLES}): noisy and biased, "
                              "compare only with sets of the same size")
        log.warning("%s", metrics["warning"])
    if pairs is not None:
        fake, refs = pairs
        # References of another size (AD outputs are the teacher's size, contents are photos) are resized to
        # their image's size: SSIM compares structure at the size the image was made at.
        refs = [ref if ref.shape == image.shape else
                F.interpolate(ref[None], size=image.shape[-2:], mode="bilinear", antialias=True)[0].clamp(-1, 1)
                for image, ref in zip(fake, refs)]
        metrics["ssim"] = sum(ssim(a, b) for a, b in zip(fake, refs)) / len(refs)  # mean over pairs
        metrics["psnr"] = sum(psnr(a, b) for a, b in zip(fake, refs)) / len(refs)
    return metrics


_NAMES = {
    "feature": "feature extractor",
    "num_fake": "generated images",
    "num_real": "reference images",
    "fid": FID_LABELS["inception"],
    "fid_domain": FID_LABELS["domain"],
    "kid_mean": "KID (mean ± std over subsets)",
    "kid_domain_mean": "KID-domain (mean ± std over subsets)",
    "ssim": "SSIM",
    "warning": "warning",
    "psnr": "PSNR (dB)",
}


def to_markdown(metrics: dict) -> str:
    """A two-column Markdown table of `metrics`, with report names (FID-domain, never bare FID, for domain)."""
    rows = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if key.startswith("kid") and key.endswith("_std") and key.replace("_std", "_mean") in metrics:
            continue  # shown with its mean: a KID without its spread over subsets reads as more exact than it is
        if isinstance(value, float):
            std = metrics.get(key.replace("_mean", "_std")) if key.startswith("kid") else None
            value = f"{value:.4g} ± {std:.2g}" if isinstance(std, float) else f"{value:.4g}"
        rows.append(f"| {_NAMES.get(key, key)} | {value} |")
    return "\n".join(rows) + "\n"
