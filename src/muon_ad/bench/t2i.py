"""`muon-ad bench t2i`: the compressed few-step text-to-image student vs its teacher, same prompts and seeds.

The Muon-AD recipe (`configs/t2i-tiny.yaml`; full: its own length, validated every 20 steps) makes the student;
an AdamW run of phase 1 (architectural distillation, the phase both optimisers share) on the same data and draws
gives the race: how many steps Muon-AD needs to reach AdamW's final held-out loss. Then, teacher (its 30 DDIM steps,
guidance 3) vs student (its LCM steps, no guidance): parameters, FLOPs per UNet call (torch.utils.flop_counter),
seconds per image, the teacher-quality judges' family and palette accuracy (`eval.recognition`), and FID-domain
against real textures (the family judge's features). The do-nothing baseline beside them: the student as copied
from the teacher, before any distillation, sampled the same way (`*_copied`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from muon_ad import DEFAULT_GUIDANCE_SCALE, DEFAULT_TEACHER
from muon_ad.bench.common import BenchOutput, median, require_teacher, time_ms
from muon_ad.bench.distill_convergence import read_curve, seconds_per_step, steps_to_reach
from muon_ad.config import load_config
from muon_ad.data.images import save_image_atomic
from muon_ad.data.procedural import PALETTES, TEXTURE_FAMILIES
from muon_ad.eval.fid import compute_fid
from muon_ad.eval.profile import count_flops, count_parameters
from muon_ad.eval.recognition import accuracy, judge, real_textures, teacher_samples, train_judges
from muon_ad.models.t2i_student import build_student
from muon_ad.models.teacher import Teacher, load_teacher
from muon_ad.recipes.distill import as_baseline
from muon_ad.recipes.distill_t2i import DistillT2IConfig, comparison_grid, distill_t2i, few_step_scheduler
from muon_ad.recipes.distill_t2i import save_student_pipeline

CONFIG = "configs/t2i-tiny.yaml"
RUNS = Path("bench-results/t2i-runs")
FULL = {"compress_steps": 400, "consistency_steps": 400, "val_every": 20, "textures": 4000, "scenes": 1000,
        "judge_images": 2400, "judge_steps": 1000, "real_images": 480, "samples_per_family": 16, "timing_repeats": 5}
QUICK = {"compress_steps": 20, "consistency_steps": 10, "val_every": 5, "textures": 300, "scenes": 60,
         "judge_images": 300, "judge_steps": 60, "real_images": 48, "samples_per_family": 1, "timing_repeats": 2}
PROMPT = "blue and orange stripes"


def recipe(settings: dict, device: str, out: Path) -> DistillT2IConfig:
    """configs/t2i-tiny.yaml at the bench's length, validated often enough to time the race."""
    overrides = [f"schedule.compress_steps={settings['compress_steps']}",
                 f"schedule.consistency_steps={settings['consistency_steps']}",
                 f"validation.every={settings['val_every']}", f"data.textures={settings['textures']}",
                 f"data.scenes={settings['scenes']}", f"train.device={device}", f"train.out_dir={out}",
                 f"train.teacher={DEFAULT_TEACHER}", f"train.checkpoint_every={settings['compress_steps']}"]
    return load_config(DistillT2IConfig, CONFIG, overrides)


def seconds_per_image(model: Teacher, repeats: int, device: str) -> float:
    """Median seconds for one image at the folder's own steps and guidance (text encoding and decoding included)."""
    return median(time_ms(lambda: model.sample([PROMPT], seed=0), repeats, 1, device)) / 1000.0


def flops_per_call(model: Teacher) -> int:
    unet, size = model.unet, model.unet.config.sample_size
    latent = torch.zeros(1, unet.config.in_channels, size, size, device=model.device)
    return count_flops(unet, latent, torch.tensor([500], device=model.device), model.encode_prompts([PROMPT]))


def costs(teacher: Teacher, student: Teacher, repeats: int, device: str) -> dict[str, float]:
    """Parameters and FLOPs per UNet call (student / teacher), each one's seconds per image and the speedup."""
    seconds = {name: seconds_per_image(model, repeats, device)
               for name, model in (("teacher", teacher), ("student", student))}
    return {"params_ratio": count_parameters(student.unet) / count_parameters(teacher.unet),
            "flops_ratio": flops_per_call(student) / flops_per_call(teacher),
            "teacher_seconds_per_image": seconds["teacher"], "student_seconds_per_image": seconds["student"],
            "speedup": seconds["teacher"] / seconds["student"]}


def run(quick: bool, device: str) -> BenchOutput:
    require_teacher(DEFAULT_TEACHER)
    settings = QUICK if quick else FULL
    out = RUNS / ("quick" if quick else "full")
    muon_cfg = recipe(settings, device, out / "muon")
    adamw_cfg = as_baseline(recipe(settings, device, out / "muon"))
    adamw_cfg.schedule.consistency_steps = 0  # the race is phase 1; phase 2 would not change the figure
    student_folder = distill_t2i(muon_cfg)
    distill_t2i(adamw_cfg)

    teacher = load_teacher(DEFAULT_TEACHER, device)
    student = load_teacher(student_folder, device)
    copied_folder = out / "copied-student"  # the do-nothing baseline: weights copied, nothing distilled
    save_student_pipeline(teacher, build_student(teacher.unet, muon_cfg.student.variant)[0], muon_cfg.consistency,
                          copied_folder)
    copied = load_teacher(copied_folder, device)

    size = teacher.image_size
    judges = train_judges(settings["judge_images"], size, settings["judge_steps"], seed=0)
    real, truth = real_textures(settings["real_images"], size, seed=1)
    real_scores = accuracy(judge(judges, real), truth)
    metrics = costs(teacher, student, settings["timing_repeats"], device)
    fid = {}
    for name, model in (("teacher", teacher), ("student", student), ("copied", copied)):
        samples, asked = teacher_samples(model, settings["samples_per_family"], model.default_steps,
                                         model.default_guidance, seed=0)
        scores = accuracy(judge(judges, samples.cpu()), asked)
        metrics[f"family_accuracy_{name}"] = scores["family"]
        metrics[f"palette_accuracy_{name}"] = scores["palette"]
        fid[name] = compute_fid(real, samples.cpu(), judges["family"])
    metrics["student_steps"] = student.default_steps
    muon_curve = [row for row in read_curve(out / "muon") if row["phase"] == 1]
    adamw_curve = read_curve(out / "muon-adamw")
    adamw_final = adamw_curve[-1]["val_loss"]
    reached = steps_to_reach(muon_curve, adamw_final)
    metrics.update(muon_steps_to_adamw_final=float("nan") if reached is None else reached,
                   adamw_steps=settings["compress_steps"])
    metrics.update({f"fid_domain_{name}": value for name, value in fid.items()})
    metrics.update(adamw_final_val_loss=adamw_final, muon_final_val_loss=muon_curve[-1]["val_loss"],
                   muon_seconds_per_step=seconds_per_step(out / "muon"),
                   adamw_seconds_per_step=seconds_per_step(out / "muon-adamw"),
                   family_accuracy_real=real_scores["family"], palette_accuracy_real=real_scores["palette"],
                   family_chance=1 / len(TEXTURE_FAMILIES), palette_chance=1 / len(PALETTES))
    grid = comparison_grid(teacher, student, 12, seed=0)
    save_image_atomic(grid, Path("bench-results") / ("t2i-samples-quick.png" if quick else "t2i-samples.png"))
    config = {"recipe": CONFIG, **settings, "variant": muon_cfg.student.variant, "teacher": DEFAULT_TEACHER,
              "teacher_steps": teacher.default_steps, "teacher_guidance": DEFAULT_GUIDANCE_SCALE,
              "student_scheduler": type(few_step_scheduler(teacher, muon_cfg.consistency)).__name__,
              "timing_prompt": PROMPT, "runs": str(out)}
    baseline = ("teacher: its 30 DDIM steps with guidance 3; race: AdamW, no conflict projection, phase 1 on the same "
                "draws; *_copied: the student as copied from the teacher, not distilled; *_real: the judges on real "
                "textures (ceiling); chance = family_chance / palette_chance")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline)
