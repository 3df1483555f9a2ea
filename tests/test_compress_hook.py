"""Pruning inside `muon-ad distill`: the hook's masks survive Muon steps, and a keep_rate < 1 run saves a
compacted student."""

import copy
import json

import pytest
import torch
from test_compress_prune import CFG, batches
from test_distill_recipe import STUDENT, recipe, teacher  # noqa: F401 (teacher is a fixture)

from muon_ad.compress.hook import PruningHook
from muon_ad.distill.curriculum import Curriculum, CurriculumConfig, PhaseConfig
from muon_ad.errors import UserError
from muon_ad.models.student import Student, load_student
from muon_ad.optim import OptimizerConfig, build_optimizer
from muon_ad.recipes.distill import distill


def test_masked_weights_stay_zero_through_muon_steps_and_finish_compacts():
    torch.manual_seed(0)
    student = Student(CFG).train()
    torch.nn.init.normal_(student.output_layer.weight, std=0.05)
    optimizer = build_optimizer(student, OptimizerConfig(adjust_lr="match_rms_adamw", lr=1e-2, adamw_lr=1e-2,
                                                         weight_decay=0.01))
    assert any(g["use_muon"] for g in optimizer.param_groups)
    hook = PruningHook("entropy", batches=lambda: batches())
    curriculum = Curriculum(CurriculumConfig(PhaseConfig(steps=4, keep_rate=(0.5, 0.5)), PhaseConfig(steps=0),
                                             PhaseConfig(steps=0), warmup_steps=0))
    content, style = batches(1)[0]
    for step in range(4):
        hook(curriculum.plan(step), student, optimizer)
        (student(content, style) - content.flip(-1)).abs().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    params = dict(student.named_parameters())
    assert hook.masks.params and 0.3 < hook.masks.pruned_fraction < 0.9
    for name, mask in hook.masks.params.items():
        assert torch.all(params[name][mask == 0] == 0), name  # exactly zero after 4 Muon / AdamW updates
        assert params[name][mask == 1].abs().sum() > 0
    masked = copy.deepcopy(student).eval()
    small = hook.finish(student).eval()
    with torch.no_grad():
        assert (masked(content, style) - small(content, style)).abs().max() <= 1e-5
    assert sum(p.numel() for p in small.parameters()) < 0.4 * sum(p.numel() for p in masked.parameters())


def test_keep_rate_schedule_is_quantised_up():
    hook = PruningHook("magnitude")
    assert [hook.target(k) for k in (1.0, 0.97, 0.95, 0.71, 0.7, 0.4)] == pytest.approx([1, 1, 0.95, 0.75, 0.7, 0.4])


def test_a_curriculum_with_pruning_runs_end_to_end_and_saves_a_compacted_student(teacher, tmp_path):  # noqa: F811
    cfg = recipe(teacher, tmp_path / "run", steps=(2, 2, 0), count=6)
    cfg.curriculum.style_alignment.keep_rate = (0.9, 0.7)
    cfg.curriculum.content_refinement.keep_rate = (0.6, 0.5)
    folder = distill(cfg)
    widths = json.loads((folder / "widths.json").read_text())
    student = load_student(folder)
    assert student.stem[1].out_channels == widths["stem.1"]["out"] == STUDENT.base_channels // 2
    out = student(torch.rand(1, 3, 20, 28) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1)
    assert out.shape == (1, 3, 20, 28) and torch.isfinite(out).all()


@pytest.mark.parametrize("keep", [(0.0, 0.5), (1.0, 1.5)])
def test_keep_rates_outside_0_1_are_refused(keep):
    with pytest.raises(UserError, match="keep_rate"):
        CurriculumConfig(PhaseConfig(keep_rate=keep))



