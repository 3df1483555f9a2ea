import pytest

from muon_ad.bench import distill_convergence as bench
from muon_ad.bench.common import BenchUnavailable


def curve(*points):
    return [{"step": float(s), "val_loss": v} for s, v in points]


def test_steps_to_reach_interpolates_between_validations():
    muon = curve((0, 1.0), (10, 0.8), (20, 0.6), (30, 0.5))
    assert bench.steps_to_reach(muon, 0.7) == pytest.approx(15.0)
    assert bench.steps_to_reach(muon, 0.8) == 10.0
    assert bench.steps_to_reach(muon, 0.4) is None
    assert bench.steps_to_reach(muon, 1.2) == 10.0  # the start does not count


def test_bench_config_splits_the_budget_like_the_authors_curriculum(tmp_path):
    cfg = bench.bench_config(bench.Settings(steps=240, batch_size=8), tmp_path, "cpu")
    assert [(p.steps, p.batch_size) for _, p in cfg.curriculum.phases()] == [(40, 8), (80, 8), (120, 8)]
    assert (cfg.optimizer.name, cfg.distill.conflict_projection) == ("muon", True)
    assert cfg.train.out_dir == str(tmp_path / "muon")


def test_without_a_teacher_the_bench_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchUnavailable, match="train-teacher"):
        bench.run(quick=True, device="cpu")
