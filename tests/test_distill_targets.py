"""The bank of AD targets: made once, reused only with the settings it was made with; a student regressing
onto it moves its outputs toward the teacher's stylisations, without running the teacher each step."""

import json

import pytest
import torch

from muon_ad.distill.data import LabelledBank, PairSet, window_bank
from muon_ad.distill.objective import DistillLossConfig, DistillObjective
from muon_ad.distill.targets import build_target_bank, pairs_by_part, training_pairs
from muon_ad.models.student import Student, StudentConfig
from muon_ad.models.teacher import build_tiny_teacher
from tiny import TINY_TEACHER

STUDENT = StudentConfig(base_channels=8, stem_stride=2, heads=2, style_channels=(8, 16), style_dim=16, style_grid=2,
                        style_size=32, norm_groups=4)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    teacher = build_tiny_teacher(TINY_TEACHER, ["a"]).freeze()
    g = torch.Generator().manual_seed(1)
    banks = [LabelledBank(torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8), [""] * 4,
                          torch.zeros(4, dtype=torch.long)) for _ in range(2)]
    train = PairSet(banks[0], banks[1], torch.zeros(4), torch.zeros(4))  # latents unused by the bank
    return teacher, train


def test_the_bank_is_cached_and_remade_when_its_settings_change(setup, tmp_path, monkeypatch):
    teacher, train = setup
    path = tmp_path / "targets.safetensors"
    index = training_pairs(train, 6, seed=0)
    bank = build_target_bank(teacher, train, *index, steps=2, lr=0.1, path=path, provenance={"t": 1})
    assert bank.images.shape == (6, 3, 32, 32) and bank.images.dtype == torch.uint8
    assert bank.content_index.tolist() == [0, 1, 2, 3, 0, 1]  # each training content in turn
    assert json.loads(path.with_suffix(".json").read_text())["content_index"] == [0, 1, 2, 3, 0, 1]

    calls = []
    monkeypatch.setattr("muon_ad.distill.targets.stylize_batch", lambda *a: calls.append(a) or a[1] * 0)
    again = build_target_bank(teacher, train, *index, steps=2, lr=0.1, path=path, provenance={"t": 1})
    assert calls == [] and torch.equal(again.images, bank.images)  # reused, not remade
    build_target_bank(teacher, train, *index, steps=2, lr=0.1, path=path, provenance={"t": 2})
    assert len(calls) == 1  # another teacher: remade
    build_target_bank(teacher, train, *training_pairs(train, 6, seed=1), steps=2, lr=0.1, path=path,
                      provenance={"t": 2})
    assert len(calls) == 2  # other pairs: remade


def test_a_student_regressing_on_targets_moves_toward_them(setup):
    teacher, train = setup
    torch.manual_seed(0)
    student = Student(STUDENT)
    objective = DistillObjective(teacher, student, DistillLossConfig(target_weight=1.0))
    content, style = train.content.batch(torch.arange(4)), train.style.batch(torch.arange(4))
    target = (style * 0.5).clamp(-1, 1)  # any fixed image per pair that is not the content
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    first = None
    for _ in range(50):
        terms = objective(student, content, style, None, None, style_weight=0.0, content_weight=0.0, targets=target)
        assert terms.ad.item() == terms.content.item() == 0  # no teacher pass when only the targets count
        first = first if first is not None else terms.target.item()
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
    assert terms.target.item() < 0.8 * first  # the untrained student (= its content) is far from the targets


def test_targets_at_larger_scales_pair_windows_of_the_same_scale(setup):
    _, small = setup
    g = torch.Generator().manual_seed(2)
    large = [LabelledBank(torch.randint(0, 256, (3, 3, 96, 96), generator=g, dtype=torch.uint8), [""] * 3,
                          torch.zeros(3, dtype=torch.long)) for _ in range(2)]
    windows = [window_bank(bank, 32, seed=5) for bank in large]
    assert windows[0].images.shape == (3, 3, 32, 32)
    assert torch.equal(window_bank(large[0], 32, seed=5).images, windows[0].images)  # seeded: a cached bank matches
    image, window = large[0].images[0], windows[0].images[0]  # a window is a piece of its picture, at its scale
    assert any(torch.equal(image[:, i : i + 32, j : j + 32], window) for i in range(65) for j in range(65))
    parts = [small, PairSet(*windows, torch.zeros(3), torch.zeros(3))]
    content_index, style_index = pairs_by_part(parts, 5, seed=0)
    assert content_index[:5].tolist() == training_pairs(small, 5, seed=0)[0].tolist()  # the first part as before
    assert all(i >= 4 for i in content_index[5:].tolist()) and all(i >= 4 for i in style_index[5:].tolist())
    assert all(i < 4 for i in style_index[:5].tolist())  # content and style of a pair come from the same scale
    joined = PairSet.concat(parts)
    assert torch.equal(joined.content.images[4], windows[0].images[0]) and len(joined.style.images) == 7
