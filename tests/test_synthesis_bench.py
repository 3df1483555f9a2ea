"""The ad-convergence benchmark: refuses to run on a missing teacher, and its bookkeeping is consistent."""

import pytest
import torch
from PIL import Image

from muon_ad.bench.ad_convergence import Settings, budget_to_reach, measure, run
from muon_ad.bench.common import BenchUnavailable
from muon_ad.models.teacher import build_tiny_teacher
from tiny import TINY_TEACHER


def test_missing_teacher_is_unavailable_not_random_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchUnavailable, match="no teacher at runs/teacher-tiny/teacher: run muon-ad train-teacher"):
        run(quick=True, device="cpu")


def test_budget_to_reach_needs_every_larger_budget_to_reach_too():
    finals = {10: 0.4, 20: 0.7, 40: 0.5, 80: 0.45, 160: 0.3}
    assert budget_to_reach(finals, 0.5) == 40  # 10 is a lucky short run: 20 misses, so it does not count
    assert budget_to_reach(finals, 0.3) == 160 and budget_to_reach(finals, 0.2) is None


def test_measure_reports_consistent_metrics_and_a_picture(tmp_path):
    torch.manual_seed(0)
    teacher = build_tiny_teacher(TINY_TEACHER, ["a"]).freeze()
    settings = Settings(size=16, steps=6, budgets=[2, 3, 6], pairs=1, exemplars=1, eval_timesteps=2,
                        adam_grid=[0.02, 0.05], muon_grid=[0.05])
    picture = tmp_path / "ad.png"
    out = measure(teacher, settings, picture)
    m, cases = out.metrics, out.config["per_case"]
    assert m["adam_iters"] == 6 and m["cases"] == 2 and len(cases) == 2
    assert set(out.config["tuning"]["final_loss_by_lr"]) == {"adam", "muon_channels", "muon_spatial"}
    assert m["adam_lr"] in (0.02, 0.05) and out.config["muon_layout"] in ("channels", "spatial")
    for row in cases:
        leader, other = ("muon", "adam") if row["muon_final_loss"] <= row["adam_final_loss"] else ("adam", "muon")
        finals = row[f"{leader}_final_loss_by_budget"]
        assert row["leader"] == leader and list(finals) == [2, 3, 6] and finals[6] == row[f"{leader}_final_loss"]
        n = row[f"{leader}_iters_to_{other}_final"]
        assert n == budget_to_reach(finals, row[f"{other}_final_loss"]) is not None
        assert row["speedup"] == pytest.approx(6 / n if leader == "muon" else n / 6)
    assert m["speedup"] == pytest.approx(sum(row["speedup"] for row in cases) / 2)  # the median of two
    width, height = Image.open(picture).size  # content | style | Adam N | Muon N | match, two cases
    assert width == 5 * 16 * 2 and height % 2 == 0 and (height // 2 - 16 * 2) % 12 == 0 and height > 2 * 16 * 2
