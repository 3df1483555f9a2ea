import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from muon_ad.eval.colour import colour_errors, grey_set, natural_set, round_trip_colour_errors, srgb_to_lab

PURPLE_CAST = torch.tensor([0.1, -0.1, 0.1]).view(1, 3, 1, 1)  # +R -G +B: what the first built-in teacher did to grey


def test_lab_matches_scikit_image():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    reference = torch.from_numpy(rgb2lab(x.permute(0, 2, 3, 1).double().numpy())).permute(0, 3, 1, 2).float()
    assert torch.allclose(srgb_to_lab(x), reference, atol=1e-3)


def test_sets_are_grey_and_coloured_and_seeded():
    grey, natural = grey_set(16, 24, 0), natural_set(16, 24, 1)
    assert grey.shape == natural.shape == (16, 3, 24, 24)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    chroma = srgb_to_lab((natural + 1) / 2)[:, 1:].norm(dim=1).mean(dim=(1, 2))
    assert chroma.mean() > 15  # natural colours, not greys
    assert torch.equal(grey, grey_set(16, 24, 0)) and not torch.equal(grey, grey_set(16, 24, 1))
    assert grey[4:].std(dim=(1, 2, 3)).min() > 0.02  # past the first quarter: textured, not uniform


def test_identity_scores_zero_and_do_nothing_models_score_badly():
    identity = round_trip_colour_errors(lambda x: x, 16, 24)
    assert all(v == pytest.approx(0.0, abs=1e-4) for v in identity.values())
    grey_out = round_trip_colour_errors(torch.zeros_like, 16, 24)
    purple = round_trip_colour_errors(lambda x: (x + PURPLE_CAST).clamp(-1, 1), 16, 24)
    for bad in (grey_out, purple):
        assert bad["colour_error_grey"] > 10 and bad["colour_error_natural"] > 10
    # A little blur keeps the mean colour: the cast stays near 0 while the per-pixel error sees the lost detail.
    blur = round_trip_colour_errors(lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
                                    16, 24)
    assert blur["colour_error_grey"] < 1 and blur["colour_error_natural"] < 1
    assert blur["colour_error_natural_pixel"] > blur["colour_error_natural"]


def test_cast_is_measured_on_the_mean_colour():
    a = torch.zeros(1, 3, 4, 4)
    errors = colour_errors(a, a + PURPLE_CAST)
    lab = rgb2lab(np.array([[[0.5, 0.5, 0.5], [0.55, 0.45, 0.55]]]))[0]
    assert errors["delta_e"] == pytest.approx(float(np.linalg.norm(lab[0] - lab[1])), rel=1e-3)
    assert errors["mean_rgb_error"] == pytest.approx(0.05 * 255, rel=1e-4)
