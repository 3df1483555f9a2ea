"""Texture measured as texture: the do-nothing-for-texture rows each fail the texture bar, and the block-grid
measure flags a pixel-shuffled random head."""

import pytest
import torch

from muon_ad.eval.colour import lab_to_srgb, srgb_to_lab
from muon_ad.eval.imitations import colour_transfer, overlay
from muon_ad.eval.recognition import train_judges
from muon_ad.eval.style_strength import FAMILY_BAR, palette_family_hits, passes_texture_bar
from muon_ad.eval.stylization import builtin_labelled_pairs
from muon_ad.eval.texture import block_energy, copy_score
from muon_ad.models.student import FIRST_SHAPE, Student, StudentConfig

SIZE, PAIRS = 32, 48


@pytest.fixture(scope="module")
def pairs():
    return builtin_labelled_pairs(PAIRS, SIZE)


@pytest.fixture(scope="module")
def family_judge():
    return {"family": train_judges(480, SIZE, 150)["family"]}


def texture_scores(images, styles, labels, judge):
    family = palette_family_hits(images, labels, judge)["family"]
    return family, copy_score(images, styles)


def test_lab_round_trip():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_srgb(srgb_to_lab(x)), x, atol=1e-4)


def test_the_style_itself_passes_so_the_bar_can_be_met(pairs, family_judge):
    _, styles, labels = pairs
    family, copy = texture_scores(styles, styles, labels, family_judge)
    assert family >= FAMILY_BAR and copy == pytest.approx(1.0)  # passes the judge; the copy guard is what stops it
    assert not passes_texture_bar(family, copy)


def test_the_identity_map_fails_the_texture_bar(pairs, family_judge):
    contents, styles, labels = pairs
    family, copy = texture_scores(contents, styles, labels, family_judge)
    assert family < FAMILY_BAR and abs(copy) < 0.1 and not passes_texture_bar(family, copy)


def test_colour_transfer_takes_the_palette_and_fails_the_texture_bar(pairs, family_judge):
    contents, styles, labels = pairs
    moved = colour_transfer(contents, styles)
    # the style's mean colour (CIELAB distance; the sRGB gamut clips a few), far nearer than the content's own
    def mean_colour_distance(images):
        return (srgb_to_lab((images + 1) / 2).mean((2, 3)) - srgb_to_lab((styles + 1) / 2).mean((2, 3))).norm(dim=1)
    assert mean_colour_distance(moved).median() < 3.0 < mean_colour_distance(contents).median() / 3
    family, copy = texture_scores(moved, styles, labels, family_judge)
    assert family < FAMILY_BAR and not passes_texture_bar(family, copy)


def test_the_overlay_is_caught_pasting(pairs, family_judge):
    contents, styles, labels = pairs
    family, copy = texture_scores(overlay(contents, styles), styles, labels, family_judge)
    assert copy >= 0.3 and not passes_texture_bar(family, copy)
    # drawing the same texture shifted (not where the style has it) is not copying
    assert abs(copy_score(styles.roll(5, dims=-1), styles)) < copy


def test_block_energy_flags_a_pixel_shuffled_random_head():
    contents, styles, _ = builtin_labelled_pairs(16, 48)  # the stem's 4x4 grid at the teacher's size
    torch.manual_seed(0)
    student = Student(StudentConfig(**FIRST_SHAPE)).eval()  # the pixel-shuffle head
    torch.nn.init.normal_(student.output_layer.weight, std=0.05)  # a random head: each of the 4x4 sub-pixels its own map
    smooth = Student(StudentConfig(head="refine")).eval()
    torch.nn.init.normal_(smooth.refine[2].weight, std=0.05)
    with torch.no_grad():
        blocky, refined = student(contents, styles), smooth(contents, styles)
    assert block_energy(contents, 4) < 1.5 and block_energy(styles, 4) < 1.5
    reference = block_energy(contents, 4)
    assert block_energy(blocky, 4) > 2.0 * reference
    assert block_energy(refined, 4) < 1.5 * reference  # no 4x4 grid from the refine head
