import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from muon_ad.eval.quality import psnr, ssim


def _image_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image in [-1,1] and a noisy, darker copy: SSIM well inside (0, 1)."""
    gen = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen), size=(40, 48), mode="bilinear")[0] * 2 - 1
    y = (0.8 * x - 0.1 + 0.2 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    return x, y


def test_ssim_agrees_with_scikit_image():
    x, y = _image_pair()
    ours = ssim(x, y)
    # The same definition in skimage: Gaussian window sigma 1.5, population covariances, images in [0, 1].
    reference = structural_similarity(
        ((x + 1) / 2).numpy(),
        ((y + 1) / 2).numpy(),
        channel_axis=0,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert 0.2 < reference < 0.9  # a non-trivial case
    assert ours == pytest.approx(reference, abs=1e-4)  # measured: 7e-7


def test_ssim_is_one_for_identical_images_and_respects_the_value_range():
    x, y = _image_pair()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    batch = torch.stack([x, y])
    assert ssim(batch, batch.flip(0)) == pytest.approx(ssim(x, y), abs=1e-6)  # mean of two equal pairs
    assert ssim((x + 1) / 2, (y + 1) / 2, value_range=(0.0, 1.0)) == pytest.approx(ssim(x, y), abs=1e-6)


def test_psnr_of_a_known_error():
    x, _ = _image_pair()
    # A shift of 0.2 in [-1,1] units is 0.1 in [0,1] units: MSE 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB.
    assert psnr(x, x + 0.2) == pytest.approx(20.0, abs=1e-3)
