"""The teacher-free texture terms: what they reward, and a few steps of them moving the texture-drawing student
toward its style."""

import pytest
import torch

from muon_ad.distill.texture import RandomPyramid, structure_loss, texture_loss
from muon_ad.eval.stylization import builtin_labelled_pairs
from muon_ad.models.student import Student, StudentConfig


@pytest.fixture(scope="module")
def pairs():
    contents, styles, _ = builtin_labelled_pairs(8, 48)
    return contents, styles


def test_texture_loss_rewards_the_styles_statistics_wherever_they_are(pairs):
    contents, styles = pairs
    pyramid = RandomPyramid()
    assert texture_loss(pyramid, styles, styles).item() == pytest.approx(0.0, abs=1e-5)
    moved = texture_loss(pyramid, styles.roll(7, dims=-1).flip(-2), styles).item()  # drawn elsewhere, not pasted
    assert moved < 0.25 * texture_loss(pyramid, contents, styles).item()
    assert torch.equal(RandomPyramid().stages[2].weight, pyramid.stages[2].weight)  # fixed seed: every run the same


def test_structure_loss_keeps_layout_and_frees_the_palette(pairs):
    contents, styles = pairs
    pyramid = RandomPyramid()
    dimmer = contents * 0.6 + 0.2  # a brightness and contrast change keeps every edge where it was
    swapped = contents[:, [2, 0, 1]]  # a recolouring moves regions' relative brightness, and so some structure
    unrelated = structure_loss(pyramid, styles, contents)
    assert structure_loss(pyramid, dimmer, contents) < 0.05 * unrelated
    assert structure_loss(pyramid, swapped, contents) < 0.5 * unrelated


def test_a_few_texture_steps_move_the_new_student_toward_its_style(pairs):
    contents, styles = pairs
    torch.manual_seed(0)
    student = Student(StudentConfig(base_channels=16, style_injection="statistics", style_size=None,
                                    position_periods=(8, 16), head="refine", style_channels=(16, 32, 64)))
    pyramid = RandomPyramid()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = texture_loss(pyramid, student(contents, styles), styles)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]  # the untrained student returns its content, far from the style
