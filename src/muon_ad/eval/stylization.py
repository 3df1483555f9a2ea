"""Evaluating a stylisation student: stylise held-out (content, style) pairs, then score the images.

What `muon-ad evaluate STUDENT` and the demo report. Pair i is content i with style i. The built-in
pairs are drawn with `EVAL_SEED`, a seed none of the project's training sets uses, so neither the
teacher nor the student has seen them. Style is scored as FID-domain/KID-domain of the stylised images
against the style images (did the images take on the styles' statistics?), structure as SSIM/PSNR
against the content images (was the content kept?). `style_strength` adds per-pair measures that the identity
map (output = content) cannot pass, and `builtin_labelled_pairs` the style labels they need.

The FID-domain feature network for the built-in data is trained on the procedural textures' family
labels, as the distillation recipe trains its own on the style bank; one network must score every
model that is compared, or the FIDs are not comparable.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

from muon_ad.data.images import to_pil, to_tensor
from muon_ad.data.procedural import ProceduralScenes, ProceduralTextures
from muon_ad.eval.domain_features import DomainFeatures, train_domain_features
from muon_ad.eval.evaluate import evaluate_images
from muon_ad.eval.fid import FeatureExtractor
from muon_ad.eval.recognition import real_textures
from muon_ad.models.teacher import Teacher
from muon_ad.runtime.backends import StudentBackend, encode_style, run_student
from muon_ad.synthesis import stylize

EVAL_SEED = 4242  # not 0 (teacher data, distillation content) nor 1 (distillation styles)


def builtin_pairs(count: int, size: int, seed: int = EVAL_SEED) -> tuple[Tensor, Tensor]:
    """(contents, styles), each (count, 3, size, size) in [-1, 1]: procedural scenes and textures."""
    contents, styles, _ = builtin_labelled_pairs(count, size, seed)
    return contents, styles


def builtin_labelled_pairs(count: int, size: int, seed: int = EVAL_SEED) -> tuple[Tensor, Tensor, dict[str, list[str]]]:
    """`builtin_pairs` and each style's true labels ({"family": [...], "palette": [...]}, as the judges name them).

    Every `size` gives the same pictures, rendered at that size (the procedural parameters depend on the seed
    only), so scores at two resolutions compare the same pairs."""
    scenes = ProceduralScenes(count, size, seed)
    styles, labels = real_textures(count, size, seed)
    return torch.stack([scenes[i]["image"] for i in range(count)]), styles, labels


# Real photos shipped inside installed packages (no network): scikit-image's sample data (a dev dependency here)
# and matplotlib's sample image. Content unlike the built-in scenes, for looking at and scoring a stylist on.
PACKAGED_PHOTOS = ("camera", "coins", "immunohistochemistry", "stereo_motorcycle", "astronaut", "coffee", "chelsea",
                   "grace_hopper")


def _packaged_photo(name: str):
    """One of `PACKAGED_PHOTOS` as a PIL image (ImportError / OSError / AttributeError where it is not installed)."""
    from PIL import Image

    if name == "grace_hopper":
        from matplotlib import cbook
        return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    import skimage.data
    array = getattr(skimage.data, name)()
    return Image.fromarray(array[0] if isinstance(array, tuple) else array)  # stereo pairs: the left view


def packaged_photos(size: int) -> tuple[Tensor, list[str]]:
    """The `PACKAGED_PHOTOS` that are installed, centre-cropped square and resized to `size` (`data.images.to_tensor`):
    ((N, 3, size, size) in [-1, 1], their names); grey photos as three equal channels."""
    images, names = [], []
    for name in PACKAGED_PHOTOS:
        try:
            images.append(to_tensor(_packaged_photo(name), size))
        except (ImportError, OSError, AttributeError):
            continue
        names.append(name)
    return torch.stack(images), names


def builtin_domain_features(size: int, count: int = 480, steps: int = 300, seed: int = 0) -> DomainFeatures:
    """A FID-domain network trained to tell the procedural texture families apart (training seed's images)."""
    return train_domain_features(ProceduralTextures(count, size, seed), steps=steps, seed=seed, size=size)


@torch.no_grad()
def stylize_pairs(backend: StudentBackend, contents: Tensor, styles: Tensor, batch_size: int = 16) -> Tensor:
    """The student's image of (content i, style i) for every pair, in batches, through the runtime's one path
    (what deployment runs); (N, 3, H, W) in [-1, 1]."""
    out = [run_student(backend, contents[i : i + batch_size], encode_style(backend, styles[i : i + batch_size]))
           for i in range(0, len(contents), batch_size)]
    return torch.cat(out)


def ad_stylize_pairs(
    teacher: Teacher, contents: Tensor, styles: Tensor, optimizer: str, steps: int,
) -> tuple[Tensor, list[float]]:
    """Optimisation-based AD style transfer (`synthesis.stylize`) of every pair at the contents' size, one pair at a
    time, and the seconds each took: the teacher's own path to the images a student is compared with."""
    images, seconds = [], []
    for content, style in zip(contents, styles):
        start = time.perf_counter()
        result = stylize(teacher, to_pil(content), to_pil(style), steps=steps, optimizer=optimizer,
                         size=contents.shape[-1], progress=False)
        seconds.append(time.perf_counter() - start)
        images.append(result.image.cpu().clamp(-1, 1))
    return torch.stack(images), seconds


def evaluate_stylized(
    images: Tensor, contents: Tensor, styles: Tensor, feature: FeatureExtractor | nn.Module = "domain",
    feature_path: str | Path | None = None, kid_subsets: int = 100,
) -> dict:
    """FID/KID against the styles, SSIM/PSNR against the contents (`feature` as in `evaluate_images`)."""
    return evaluate_images(images, styles, feature=feature, feature_path=feature_path, pairs_with=contents,
                           kid_subsets=kid_subsets)
