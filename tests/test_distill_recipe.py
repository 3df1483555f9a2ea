import csv
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from muon_ad.config import load_config
from muon_ad.errors import UserError
from muon_ad.distill.curriculum import CurriculumConfig, PhaseConfig
from muon_ad.distill.data import DistillDataConfig
from muon_ad.distill.objective import DistillLossConfig
from muon_ad.models.student import StudentConfig, load_student
from muon_ad.models.teacher import TinyTeacherConfig, build_tiny_teacher, save_teacher
from muon_ad.recipes.distill import DistillTrainConfig, DistillConfig, ValidationConfig, as_baseline, distill

STUDENT = StudentConfig(base_channels=8, stem_stride=2, heads=2, style_channels=(8, 16), style_dim=16, style_grid=2,
                        style_size=32, norm_groups=4)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A random tiny teacher at 32 px (7 self-attention layers, like the built-in one), saved like a real one."""
    torch.manual_seed(0)
    cfg = TinyTeacherConfig(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32), attention_heads=2,
                            text_dim=32, text_layers=1)
    return str(save_teacher(build_tiny_teacher(cfg, ["a"]), tmp_path_factory.mktemp("teacher") / "teacher"))


def recipe(teacher, out, steps=(2, 2, 2), lr=3e-3, count=8) -> DistillConfig:
    phases = [PhaseConfig(steps=steps[0], batch_size=2, lr=lr, style_weight=0.8, content_weight=0.2),
              PhaseConfig(steps=steps[1], batch_size=2, lr=lr / 2, content_weight=None, adapt_content_weight=True),
              PhaseConfig(steps=steps[2], batch_size=2, lr=lr / 10, content_weight=None, freeze_style_encoder=True)]
    return DistillConfig(
        student=STUDENT,
        curriculum=CurriculumConfig(*phases, warmup_steps=1),
        data=DistillDataConfig(content_count=count, style_count=count, val_pairs=4),
        distill=DistillLossConfig(target_weight=0.0),  # the paper's objective through the teacher (AD targets: below)
        validation=ValidationConfig(every=100, style_weight=1.0, content_weight=0.25, batch_size=4, fid_feature_steps=2,
                                    fid_feature_widths=(8, 16), grid=2),
        train=DistillTrainConfig(out_dir=str(out), teacher=teacher, checkpoint_every=3),
    )


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_few_steps_lower_the_validation_loss(teacher, tmp_path):
    cfg = recipe(teacher, tmp_path / "run", steps=(12, 0, 0), count=6)
    cfg.validation.every = 6
    folder = distill(cfg)
    val = [float(r["val_loss"]) for r in rows(tmp_path / "run" / "val.csv")]
    assert [int(r["step"]) for r in rows(tmp_path / "run" / "val.csv")] == [0, 6, 12]
    assert val[-1] < 0.97 * val[0], val
    assert load_student(folder).config == STUDENT
    for name in ("samples.png", "log.csv", "tensorboard", "fid-domain"):
        assert (tmp_path / "run" / name).exists(), name


def test_curriculum_phases_apply_their_settings(teacher, tmp_path, caplog):
    seen = []

    def hook(plan, student, optimizer):
        encoder = {k: v.clone() for k, v in student.style_encoder.state_dict().items()}
        others = {k: v.clone() for k, v in student.head.state_dict().items()}
        seen.append((plan, [g["lr"] for g in optimizer.param_groups], encoder, others,
                     all(p.requires_grad for p in student.style_encoder.parameters())))

    with caplog.at_level(logging.INFO, logger="muon_ad.distill"):
        distill(recipe(teacher, tmp_path / "run"), hooks=[hook])
    assert [int(r["phase"]) for r in rows(tmp_path / "run" / "log.csv")] == [1, 1, 2, 2, 3, 3]
    assert "phase 3 (joint_optimisation)" in caplog.text
    for plan, lrs, *_ in seen:
        assert lrs == [plan.lr] * len(lrs)
    assert [trainable for *_, trainable in seen] == [True] * 4 + [False] * 2

    def changed(a, b):
        return any(not torch.equal(a[k], b[k]) for k in a)

    assert changed(seen[3][2], seen[4][2])  # a phase-2 step moves the style encoder...
    assert not changed(seen[4][2], seen[5][2])  # ...a phase-3 step does not
    assert changed(seen[4][3], seen[5][3])  # while the rest of the student still learns


def test_an_interrupted_run_resumes_to_the_same_student(teacher, tmp_path):
    straight = load_file(str(distill(recipe(teacher, tmp_path / "straight")) / "model.safetensors"))

    def interrupt(plan, student, optimizer):
        if plan.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, before step 4: the run saves after it and stops

    cfg = recipe(teacher, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, hooks=[interrupt])
    assert (tmp_path / "resumed" / "latest").read_text() == "step-0000004"
    resumed = load_file(str(distill(cfg) / "model.safetensors"))
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
    assert [int(r["step"]) for r in rows(tmp_path / "resumed" / "log.csv")] == [1, 2, 3, 4, 5, 6]


def test_baseline_is_the_same_recipe_on_adamw_without_projection(teacher, tmp_path):
    cfg = recipe(teacher, tmp_path / "run")
    baseline = as_baseline(cfg)
    assert (baseline.optimizer.name, baseline.distill.conflict_projection) == ("adamw", False)
    assert baseline.train.out_dir == str(tmp_path / "run-adamw")
    assert (cfg.optimizer.name, cfg.distill.conflict_projection) == ("muon", True)  # the original is untouched


def test_cpu_config_spells_out_the_defaults_and_gpu_config_is_the_authors_shape():
    configs = Path(__file__).parents[1] / "configs"
    assert load_config(DistillConfig, configs / "stylize-cpu.yaml") == DistillConfig()
    gpu = load_config(DistillConfig, configs / "stylize-gpu.yaml")
    shape = gpu.student.base_channels, gpu.student.channel_mult, gpu.student.heads, gpu.student.attention_levels
    assert shape == (64, (1, 2, 4), 8, 2)
    assert [(p.steps, p.batch_size) for _, p in gpu.curriculum.phases()] == [(500, 32), (1000, 32), (1500, 16)]


def test_a_run_on_ad_targets_makes_its_banks_once_and_validates_on_them(teacher, tmp_path):
    cfg = recipe(teacher, tmp_path / "run", steps=(4, 0, 0), count=6)
    for _, phase in cfg.curriculum.phases():
        phase.style_weight, phase.content_weight = 0.0, 0.0  # only the targets count: no teacher pass per step
    cfg.distill = DistillLossConfig(target_weight=1.0, target_pairs=4, target_steps=2)
    cfg.validation.style_weight = cfg.validation.content_weight = 0.0
    cfg.validation.every = 2
    distill(cfg)
    val = rows(tmp_path / "run" / "val.csv")
    assert [float(r["val_loss"]) for r in val] == [float(r["target"]) for r in val] and float(val[0]["target"]) > 0
    assert float(val[-1]["target"]) < float(val[0]["target"])  # the student moves toward the teacher's stylisations
    assert all(float(r["ad"]) == 0 for r in rows(tmp_path / "run" / "log.csv"))
    banks = sorted(p.name for p in (tmp_path / "run").glob("ad-targets*.safetensors"))
    assert banks == ["ad-targets-val.safetensors", "ad-targets.safetensors"]
    stamp = (tmp_path / "run" / "ad-targets.safetensors").stat().st_mtime_ns
    cfg.train.out_dir, cfg.distill.target_path = str(tmp_path / "again"), str(tmp_path / "run" / "ad-targets.safetensors")
    distill(cfg)
    assert (tmp_path / "run" / "ad-targets.safetensors").stat().st_mtime_ns == stamp  # shared, not remade
    copy = shutil.copytree(cfg.train.teacher, tmp_path / "teacher-copy", copy_function=shutil.copyfile)  # new mtimes
    cfg.train.out_dir, cfg.train.teacher = str(tmp_path / "copied"), str(copy)
    distill(cfg)
    assert (tmp_path / "run" / "ad-targets.safetensors").stat().st_mtime_ns == stamp  # the same teacher by its bytes


def test_a_run_with_nothing_to_train_is_refused(teacher, tmp_path):
    cfg = recipe(teacher, tmp_path / "run")
    cfg.curriculum.style_alignment.style_weight = cfg.curriculum.style_alignment.content_weight = 0.0
    with pytest.raises(UserError, match="curriculum.style_alignment.*nothing to train"):
        distill(cfg)
