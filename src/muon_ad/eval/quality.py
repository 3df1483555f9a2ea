"""Pairwise image quality: SSIM and PSNR (torchmetrics), for aligned pairs such as stylised vs content.

Images are in [-1, 1] by default (the project's convention); pass `value_range=(0, 1)` otherwise. Both
metrics first map images to [0, 1] and use data_range=1. That matters for SSIM: its stabilising
constants scale with the data range and its luminance term is not shift-invariant, so SSIM computed
directly on [-1, 1] data would differ from the usual [0, 1] figure.

SSIM is the standard Gaussian variant (window sigma 1.5, k1=0.01, k2=0.03, population covariances).
torchmetrics computes the SSIM map; we average it only where the window lies inside the image, as
the reference implementation (Wang et al.) and scikit-image do. torchmetrics' own mean also counts
border windows that see reflected padding, which shifts small images' scores by several hundredths.
"""

from __future__ import annotations

from torch import Tensor


SIGMA = 1.5
RADIUS = int(3.5 * SIGMA + 0.5)  # the Gaussian window's radius (it is 11 px wide), as in torchmetrics and skimage


def _to_unit(x: Tensor, value_range: tuple[float, float]) -> Tensor:
    low, high = value_range
    x = (x.float() - low) / (high - low)
    return x if x.dim() == 4 else x.unsqueeze(0)


def ssim(x: Tensor, y: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Mean SSIM between aligned images (3,H,W) or (B,3,H,W), H and W above 11."""
    from torchmetrics.functional.image import structural_similarity_index_measure  # deferred: slow import

    x, y = _to_unit(x, value_range), _to_unit(y, value_range)
    _, ssim_map = structural_similarity_index_measure(x, y, sigma=SIGMA, data_range=1.0, return_full_image=True)
    return float(ssim_map[..., RADIUS:-RADIUS, RADIUS:-RADIUS].mean())


def psnr(x: Tensor, y: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """PSNR in dB of the mean squared error over all pixels of the aligned images, in [0, 1] units."""
    from torchmetrics.functional.image import peak_signal_noise_ratio  # deferred: slow import

    x, y = _to_unit(x, value_range), _to_unit(y, value_range)
    return float(peak_signal_noise_ratio(x, y, data_range=1.0))
