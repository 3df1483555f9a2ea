import pytest
import torch

from muon_ad.optim.newton_schulz import KELLER_COEFFICIENTS, POLAR_EXPRESS_COEFFICIENTS, orthogonalize


def _singular_values(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(x.double())


@pytest.mark.parametrize("shape", [(48, 48), (16, 144), (144, 16), (40, 64), (3, 12, 36)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_singular_values_land_near_one(shape, dtype):
    # (16, 144) and (144, 16) take the Gram path in fp32; (40, 64) and squares the standard one.
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = orthogonalize(g, dtype=dtype)
    assert out.shape == g.shape and out.dtype == dtype
    s = _singular_values(out)
    assert s.min() > 0.6 and s.max() < 1.3


def test_gram_and_standard_paths_agree():
    g = torch.randn(24, 200, generator=torch.Generator().manual_seed(1))
    gram = orthogonalize(g, dtype=torch.float32)  # n > 1.5 m: Gram formulation
    # The same polynomial one standard step at a time (float64 reference).
    x = g.double() / g.double().norm()
    a, b, c = KELLER_COEFFICIENTS
    for _ in range(5):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    torch.testing.assert_close(gram.double(), x, atol=2e-5, rtol=0)


def test_per_step_coefficients_orthogonalise_tighter():
    g = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    keller = _singular_values(orthogonalize(g, dtype=torch.float32))
    polar = _singular_values(orthogonalize(g, coefficients=POLAR_EXPRESS_COEFFICIENTS, dtype=torch.float32))
    top = slice(0, 56)  # away from the few tiny singular values of a random square matrix
    assert (polar[top] - 1).abs().max() < (keller[top] - 1).abs().max()


def test_fp16_normalises_before_the_cast():
    g = torch.randn(32, 32, generator=torch.Generator().manual_seed(3)) * 1e6  # overflows fp16 if cast raw
    out = orthogonalize(g, dtype=torch.float16)
    assert torch.isfinite(out).all()
    s = _singular_values(out.float())
    assert s.max() < 1.3


def test_autocast_does_not_downcast_an_fp32_iteration():
    g = torch.randn(32, 96, generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = orthogonalize(g, dtype=torch.float32)
    assert torch.equal(inside, orthogonalize(g, dtype=torch.float32))


def test_zero_matrix_stays_zero():
    assert torch.equal(orthogonalize(torch.zeros(8, 8), dtype=torch.float32), torch.zeros(8, 8))
