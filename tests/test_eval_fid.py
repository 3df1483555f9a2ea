import pytest
import torch

from muon_ad.errors import UserError
from muon_ad.eval.domain_features import DomainFeatures
from muon_ad.eval.fid import (
    compute_fid,
    compute_kid,
    extract_features,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    load_feature_extractor,
)


def _samples_with_moments(mu: torch.Tensor, sigma: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n samples whose sample mean is exactly mu and unbiased sample covariance exactly sigma."""
    z = torch.randn(n, len(mu), generator=gen, dtype=torch.float64)
    z = z - z.mean(0)
    whiten = torch.linalg.cholesky(z.T @ z / (n - 1))
    z = torch.linalg.solve_triangular(whiten, z.T, upper=False).T  # now cov(z) = I exactly
    return mu + z @ torch.linalg.cholesky(sigma).T


def _random_spd(d: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    # Diagonal covariances commute, so (S1 S2)^1/2 = sqrt(S1) sqrt(S2) and FID is a sum of squares.
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((var1.sqrt() - var2.sqrt()) ** 2).sum()  # 5 + (1 + 0 + 4)
    assert frechet_distance(mu1, torch.diag(var1), mu2, torch.diag(var2)) == pytest.approx(float(expected))
    assert float(expected) == 10.0


def test_torchmetrics_fid_of_shifted_gaussians_equals_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    d, n = 6, 50
    mu1, mu2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    s1, s2 = _random_spd(d, gen), _random_spd(d, gen)
    real, fake = _samples_with_moments(mu1, s1, n, gen), _samples_with_moments(mu2, s2, n, gen)
    assert fid_from_features(real, fake) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
    # A pure shift of the same Gaussian costs exactly the squared shift.
    shift = torch.tensor([3.0, 0, 0, 0, 4.0, 0], dtype=torch.float64)
    assert fid_from_features(real, real + shift) == pytest.approx(25.0, rel=1e-6)


def test_identical_image_sets_have_zero_fid_and_different_ones_do_not():
    torch.manual_seed(0)
    feature = DomainFeatures(["a", "b"], widths=(8, 16))
    images = torch.rand(12, 3, 16, 16) * 2 - 1
    scale = float(extract_features(images, feature).var(0).sum())  # FID has the units of feature variance
    assert compute_fid(images, images, feature, batch_size=5) == pytest.approx(0.0, abs=1e-6 * scale)
    assert compute_fid(images, images * 0.5 + 0.5, feature, batch_size=5) > 0.1 * scale


def test_kid_clamps_small_sets_is_seeded_and_leaves_the_global_rng_alone():
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    same = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    state = torch.get_rng_state()
    near = kid_from_features(real, same, subsets=10, subset_size=1000, seed=0)  # 1000 > 6 samples: clamped
    assert torch.equal(torch.get_rng_state(), state)
    assert near == kid_from_features(real, same, subsets=10, subset_size=1000, seed=0)
    far_mean, far_std = kid_from_features(real, same + 3.0, subsets=10, subset_size=1000, seed=0)
    assert far_mean > near[0] + 1.0 and far_std >= 0.0
    with pytest.raises(UserError, match="at least 2"):
        kid_from_features(real, same[:1])


def test_compute_kid_on_images():
    torch.manual_seed(0)
    feature = DomainFeatures(["a", "b"], widths=(8, 16))
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    mean, std = compute_kid(images, images - 1.0, feature, subsets=5, subset_size=4)
    assert mean > 0 and std >= 0


def test_features_of_mixed_sizes_and_batches_keep_every_image_in_order():
    torch.manual_seed(0)
    feature = DomainFeatures(["a", "b"], widths=(8, 16), size=16)
    a, b = torch.rand(3, 3, 16, 16), torch.rand(2, 3, 24, 24)
    mixed = extract_features([a, b[0], b[1]], feature, batch_size=2)
    with torch.no_grad():
        expected = torch.cat([feature(a), feature(b)]).double()
    assert mixed.shape == (5, 16) and mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, expected)


def test_feature_extractor_choice_errors_are_user_errors():
    with pytest.raises(UserError, match="FID-domain needs"):
        load_feature_extractor("domain")
    with pytest.raises(UserError, match="unknown feature extractor"):
        load_feature_extractor("clip")  # type: ignore[arg-type]
