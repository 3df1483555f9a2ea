"""FID and KID between two image sets, with torchmetrics doing the statistics.

Features are extracted once per set and handed to torchmetrics through an identity "feature module",
so FID and KID of the same sets share one (slow) pass of the extractor. torchmetrics passes whatever
`update` gets straight to a custom module (its uint8/`normalize` handling applies only to its built-in
Inception), and reads `num_features` from it instead of probing it with a dummy image.

Two extractors: "inception" (the standard FID network, needs its weights) and "domain" (a small CNN
trained on the built-in data). Scores from the second are labelled FID-domain / KID-domain everywhere.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from muon_ad.errors import UserError
from muon_ad.eval.domain_features import DomainFeatures, train_domain_features
from muon_ad.eval.inception import load_fid_inception

FeatureExtractor = Literal["inception", "domain"]
Images = Tensor | Iterable[Tensor]  # (N,3,H,W) in [-1,1], or an iterable of (3,H,W) / (B,3,H,W)

# How each extractor's scores are named in reports: "FID" means the standard Inception FID, nothing else.
FID_LABELS: dict[str, str] = {"inception": "FID", "domain": "FID-domain"}

log = logging.getLogger("muon_ad.eval")


def load_feature_extractor(kind: FeatureExtractor, path: str | Path | None = None) -> nn.Module:
    """The Inception FID network (weights at `path` or in the hub cache) or a trained `DomainFeatures` folder."""
    if kind == "inception":
        return load_fid_inception(path)
    if kind == "domain":
        if path is None:
            raise UserError("FID-domain needs a trained domain feature extractor folder (see train_domain_features)")
        return DomainFeatures.load(path)
    raise UserError(f"unknown feature extractor '{kind}' (choose 'inception' or 'domain')")


def style_feature_network(
    kind: str, path: str | Path | None, styles: Tensor, labels: Tensor, cache: Path, steps: int,
    widths: Sequence[int], seed: int,
) -> nn.Module:
    """The feature network a training run scores its styles with: Inception or a given extractor folder (`path`),
    else a FID-domain CNN trained on the labelled `styles` (N,3,H,W) in [-1,1], saved to and reused from `cache`."""
    if kind == "inception" or path is not None:
        return load_feature_extractor(kind, path)
    if kind != "domain":
        raise UserError(f"validation.fid_features={kind!r}: choose 'domain' or 'inception'")
    if (cache / "config.json").is_file():
        return DomainFeatures.load(cache)
    if len(set(labels.tolist()) - {-1}) < 2:
        raise UserError("FID-domain needs labelled styles (textures, wikiart, dtd) to train its features; "
                        "set validation.fid_features_path or validation.fid_features=inception")
    log.info("training the FID-domain feature network on %d style images", len(styles))
    items = [{"image": image, "label": int(label)} for image, label in zip(styles, labels)]
    model = train_domain_features(items, steps=steps, seed=seed, widths=widths, size=styles.shape[-1])
    model.save(cache)
    return model


def iter_images(images: Images) -> Iterator[Tensor]:
    """The (3,H,W) images of a set, whether it is one tensor or an iterable of images or batches."""
    for item in images:
        yield from item if item.dim() == 4 else [item]


def _batches(images: Images, batch_size: int) -> Iterator[Tensor]:
    """Stacks of up to `batch_size` images; a change of image size starts a new stack."""
    pending: list[Tensor] = []
    for image in iter_images(images):
        if pending and (len(pending) == batch_size or image.shape != pending[0].shape):
            yield torch.stack(pending)
            pending = []
        pending.append(image)
    if pending:
        yield torch.stack(pending)


@torch.no_grad()
def extract_features(images: Images, feature: nn.Module, batch_size: int = 32, device: str = "cpu") -> Tensor:
    """(N, D) float64 features of `images` (in [-1,1]) under `feature`, run in eval mode on `device`."""
    feature = feature.to(device).eval()
    chunks = [feature(batch.to(device, torch.float32)).double().cpu() for batch in _batches(images, batch_size)]
    if not chunks:
        raise UserError("no images to compute features of")
    return torch.cat(chunks)


class _Given(nn.Module):
    """A 'feature extractor' for already-extracted features: what torchmetrics calls, it returns unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (unbiased covariances)."""
    if len(real) < 2 or len(fake) < 2:
        raise UserError(f"FID needs at least 2 images per set (got {len(real)} real, {len(fake)} fake)")
    from torchmetrics.image.fid import FrechetInceptionDistance  # deferred: importing torchmetrics takes seconds

    # sync_on_compute=False: the sets given are the whole sets; torchmetrics would otherwise all-gather them over a
    # torch.distributed run's ranks (and wait forever where only rank 0 evaluates)
    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]), sync_on_compute=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_from_features(
    real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over random subsets) of two (N, D) feature sets.

    `subset_size` is clamped to the smaller set, so small evaluation sets still give a (noisier) value.
    """
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise UserError(f"KID needs at least 2 images per set (got {len(real)} real, {len(fake)} fake)")
    from torchmetrics.image.kid import KernelInceptionDistance  # deferred: importing torchmetrics takes seconds

    with warnings.catch_warnings():  # torchmetrics warns that KID keeps all features: ours are already in memory
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets, subset_size=size,
                                         sync_on_compute=False)  # as in fid_from_features
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # subsets are drawn with the global RNG: seed it, then restore it
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def compute_fid(real: Images, fake: Images, feature: nn.Module, batch_size: int = 32, device: str = "cpu") -> float:
    """FID between two image sets under `feature` (report it as FID only for the Inception network)."""
    return fid_from_features(
        extract_features(real, feature, batch_size, device), extract_features(fake, feature, batch_size, device)
    )


def compute_kid(
    real: Images,
    fake: Images,
    feature: nn.Module,
    batch_size: int = 32,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[float, float]:
    """KID (mean, std) between two image sets under `feature`."""
    return kid_from_features(
        extract_features(real, feature, batch_size, device),
        extract_features(fake, feature, batch_size, device),
        subsets,
        subset_size,
        seed,
    )


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), via scipy's sqrtm.

    An independent reference for the torchmetrics path (which uses eigenvalues of S1 S2 instead).
    """
    mu1, sigma1, mu2, sigma2 = (np.asarray(v, dtype=np.float64) for v in (mu1, sigma1, mu2, sigma2))
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real  # tiny imaginary parts are numerical noise
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean))
