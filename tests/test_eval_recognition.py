"""Recognition judges: trained on real textures they tell families and palettes apart; teacher prompts cover every family."""

import pytest
import torch

from muon_ad.bench.common import BenchUnavailable
from muon_ad.bench.teacher_quality import run
from muon_ad.data.procedural import PALETTES, TEXTURE_FAMILIES, palette_words
from muon_ad.eval.recognition import accuracy, judge, real_textures, teacher_samples, train_judges
from muon_ad.models.teacher import build_tiny_teacher
from tiny import TINY_TEACHER


def test_accuracy_scores_each_judge_and_each_family():
    truth = {"family": ["dots", "dots", "checks", "checks"], "palette": ["red and white"] * 4}
    verdicts = {"family": ["dots", "checks", "checks", "checks"], "palette": ["red and white", "black and white"] * 2}
    scores = accuracy(verdicts, truth)
    assert scores == {"family": 0.75, "palette": 0.5, "family_dots": 0.5, "family_checks": 1.0}


def test_judges_trained_on_real_textures_beat_chance_on_held_out_ones():
    judges = train_judges(count=240, size=32, steps=150, seed=0)
    images, truth = real_textures(96, 32, seed=1)
    scores = accuracy(judge(judges, images), truth)
    assert scores["family"] > 4 / len(TEXTURE_FAMILIES), scores
    assert scores["palette"] > 4 / len(PALETTES), scores
    assert set(judges["palette"].labels) == {palette_words(p) for p in PALETTES}


def test_teacher_samples_ask_for_every_family_in_rotating_palettes():
    torch.manual_seed(0)
    teacher = build_tiny_teacher(TINY_TEACHER, ["and", *TEXTURE_FAMILIES, *(w for p in PALETTES for w in p.split("_"))]).freeze()
    images, asked = teacher_samples(teacher, per_family=2, steps=2, guidance_scale=3.0, batch=10)
    assert images.shape == (2 * len(TEXTURE_FAMILIES), 3, 32, 32)
    assert asked["family"] == [f for f in TEXTURE_FAMILIES for _ in range(2)]
    assert asked["palette"][:2] != asked["palette"][2:4] and len(set(asked["palette"])) == len(PALETTES)


def test_teacher_quality_bench_refuses_a_missing_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchUnavailable, match="no teacher at runs/teacher-tiny/teacher"):
        run(quick=True, device="cpu")
