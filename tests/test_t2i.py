"""The compressed few-step text-to-image student: block removal and weight copy, its objectives, the recipe's
SD folder (loaded by diffusers itself), resume, and its bad inputs."""

import shutil
import sys

import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from muon_ad import cli
from muon_ad.distill.t2i import (
    CompressObjective,
    ConsistencyConfig,
    ConsistencyObjective,
    T2ILossConfig,
    block_outputs,
)
from muon_ad.errors import UserError
from muon_ad.models.t2i_student import VARIANTS, build_student, paired_blocks, student_config
from muon_ad.models.teacher import build_tiny_teacher, load_teacher, save_teacher
from muon_ad.optim import OptimizerConfig, build_optimizer
from muon_ad.recipes.distill_t2i import DistillT2IConfig, distill_t2i, save_student_pipeline
from tiny import TINY_TEACHER

VOCABULARY = "red blue green stripes dots and".split()


def sd_shaped_unet() -> UNet2DConditionModel:
    """SD-1.5's block structure (2 layers per stage, three attention stages and an attention-free innermost one,
    equal widths at the two innermost levels) at a tiny width."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16, block_out_channels=(16, 32, 64, 64), layers_per_block=2, cross_attention_dim=32,
        attention_head_dim=2, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    torch.manual_seed(0)
    return save_teacher(build_tiny_teacher(TINY_TEACHER, VOCABULARY), tmp_path_factory.mktemp("t2i") / "teacher")


@pytest.mark.parametrize("variant", VARIANTS)
def test_block_removal_copies_every_tensor_and_pairs_equal_shapes(variant):
    teacher = sd_shaped_unet()
    student, copied = build_student(teacher, variant)
    assert copied.copied == copied.total and not copied.not_copied
    assert student.config.layers_per_block == 1 and len(student.up_blocks[0].resnets) == 2
    assert (student.mid_block is None) == (variant != "base")
    assert len(student.down_blocks) == (3 if variant == "tiny" else 4)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    pairs = paired_blocks(student.config, teacher.config)
    assert len(pairs) >= 5 and any(s.startswith("up_blocks") for s, _ in pairs)
    x, t, text = torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), torch.randn(2, 5, 32)
    with torch.no_grad(), block_outputs(student, [s for s, _ in pairs]) as fs, \
            block_outputs(teacher, [t_ for _, t_ in pairs]) as ft:
        student(x, t, text)
        teacher(x, t, text)
    assert all(fs[s].shape == ft[t_].shape for s, t_ in pairs)


def test_copying_by_name_alone_would_mismatch_the_last_up_layers():
    teacher = sd_shaped_unet()
    student = UNet2DConditionModel.from_config(student_config(teacher.config, "base"))
    source = teacher.state_dict()
    mismatched = [n for n, v in student.state_dict().items() if n in source and source[n].shape != v.shape]
    assert mismatched and all(n.startswith("up_blocks") for n in mismatched)


def test_bad_variants_are_one_line():
    teacher = sd_shaped_unet()
    with pytest.raises(UserError, match="unknown student variant 'huge'; choose from base, small, tiny"):
        build_student(teacher, "huge")
    one_layer = UNet2DConditionModel.from_config({**teacher.config, "layers_per_block": 1})
    with pytest.raises(UserError, match="variant 'base' removes nothing from this teacher"):
        build_student(one_layer, "base")


def test_a_few_distillation_steps_lower_both_objectives(teacher_folder):
    teacher = load_teacher(teacher_folder)
    torch.manual_seed(0)
    latents, text = torch.randn(4, 4, 8, 8), teacher.encode_prompts(["red stripes", "blue dots", "green", ""])
    t, eps = torch.tensor([50, 300, 600, 900]), torch.randn(4, 4, 8, 8)
    for task_weight, drop in ((1.0, 0.9), (0.0, 0.5)):  # the whole loss; the distillation terms alone
        student, _ = build_student(teacher.unet, "small")
        compress = CompressObjective(teacher, student, T2ILossConfig(task_weight=task_weight))
        optimizer = build_optimizer(student, OptimizerConfig(adjust_lr="match_rms_adamw", lr=1e-3, adamw_lr=1e-3))
        first = compress(student, latents, text, t, eps)
        assert first.kl > 0 and first.feature > 0 and first.output > 0  # every term is live (the mid block is gone)
        for _ in range(5):
            compress(student, latents, text, t, eps).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        assert compress(student, latents, text, t, eps).loss < drop * first.loss

    consistency = ConsistencyObjective(teacher, ConsistencyConfig())
    student, _ = build_student(teacher.unet, "small")
    target, _ = build_student(teacher.unet, "small")
    optimizer = build_optimizer(student, OptimizerConfig(adjust_lr="match_rms_adamw", lr=2e-4, adamw_lr=2e-4))
    target.load_state_dict(student.state_dict())
    t = consistency.draw_timesteps(4, torch.Generator().manual_seed(0))
    assert set(t.tolist()) <= set(range(19, 1000, 20))  # LCMScheduler's grid
    start = consistency(student, target, latents, text, t, eps).item()
    for _ in range(5):
        consistency(student, target, latents, text, t, eps).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert consistency(student, target, latents, text, t, eps).item() < 0.6 * start


def test_the_student_folder_loads_in_diffusers_and_samples_in_few_steps(teacher_folder, tmp_path, monkeypatch):
    teacher = load_teacher(teacher_folder)
    student, _ = build_student(teacher.unet, "small")
    folder = save_student_pipeline(teacher, student, ConsistencyConfig(sample_steps=2), tmp_path / "student")
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.unet.config.mid_block_type is None
    image = pipe(["red stripes"], num_inference_steps=2, guidance_scale=1.0, output_type="pt", height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    loaded = load_teacher(folder)
    assert isinstance(loaded.scheduler, LCMScheduler) and (loaded.default_steps, loaded.default_guidance) == (2, 1.0)
    assert torch.equal(loaded.sample(["red stripes"], seed=0), image * 2 - 1)  # its own steps, no guidance
    monkeypatch.setattr(sys, "argv", ["muon-ad", "sample", "-p", "blue dots", "--teacher", str(folder),
                                      "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0 and (tmp_path / "x.png").is_file()


def test_a_prompt_longer_than_the_tokenizer_takes_is_one_line(teacher_folder, tmp_path, monkeypatch, capsys):
    prompt = "red and blue and green stripes and dots and red"  # 10 words, the tokenizer takes 8
    with pytest.raises(UserError, match="is 10 tokens; this model's tokenizer takes at most 8"):
        load_teacher(teacher_folder).sample([prompt], steps=1)
    monkeypatch.setattr(sys, "argv", ["muon-ad", "sample", "-p", prompt, "--teacher", str(teacher_folder),
                                      "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # (after the loaders' progress bars)
    assert exit_.value.code == 2 and "Traceback" not in err and [l for l in lines if "error" in l] == lines[-1:]
    assert "tokenizer takes at most 8" in lines[-1]


def tiny_recipe(teacher_folder, out) -> DistillT2IConfig:
    cfg = DistillT2IConfig()
    cfg.student.variant = "small"
    cfg.schedule.compress_steps = cfg.schedule.consistency_steps = 2
    cfg.schedule.batch_size = 2
    cfg.data.size, cfg.data.textures, cfg.data.scenes, cfg.data.val_count = 32, 8, 2, 2
    cfg.validation.every, cfg.validation.grid_prompts = 2, 2
    cfg.consistency.sample_steps = 1
    cfg.train.teacher, cfg.train.out_dir, cfg.train.checkpoint_every = str(teacher_folder), str(out), 1
    return cfg


def test_the_recipe_writes_a_student_folder_and_resumes_to_the_same_weights(teacher_folder, tmp_path):
    folder = distill_t2i(tiny_recipe(teacher_folder, tmp_path / "run"))
    assert (tmp_path / "run" / "samples.png").is_file() and (folder / "scheduler").is_dir()
    finished = load_teacher(folder).unet.state_dict()
    shutil.rmtree(tmp_path / "run" / "step-0000004")  # as if killed during phase 2, after step 3's checkpoint
    (tmp_path / "run" / "latest").write_text("step-0000003")
    resumed = load_teacher(distill_t2i(tiny_recipe(teacher_folder, tmp_path / "run"))).unet.state_dict()
    assert all(torch.equal(finished[k], resumed[k]) for k in finished)
