"""`muon-ad bench stylization`: how much style each method puts into held-out pairs, and how much content it keeps.

Rows, all on the same held-out built-in (content, style) pairs (`builtin_labelled_pairs`, a seed no training
set uses), scored by the same FID-domain network and recognition judges (`eval.style_strength`):
- identity: output = content (keeps everything, stylises nothing: the floor of style strength);
- ad / ad_muon: optimisation-based AD (`synthesis.stylize`) with Adam / Muon, the published 200 steps;
- student / student_adamw: the Muon-AD student and the AdamW baseline student, distilled here from scratch
  with the recipe at its full length (distill-convergence's `RECIPE`: one `race`, the recipe's own lrs), so
  the two are as comparable as in that bench and nothing stale (an older teacher's student) is scored.
style_strength_ratio_<row> = (style_fid_identity − style_fid_<row>) / (style_fid_identity − style_fid_ad).

Resolutions: the teacher's (what the student is trained at) for every row, and `large` (256 px) for the
identity and the students, which are fully convolutional and cheap there. AD is not run at 256 px: its
seconds per image there are estimated from timed steps (as `bench realtime` does) and reported instead.
Seconds per image: AD per pair, one at a time; students per image of a batched pass, after a warm-up.
Figures: a Pareto plot of style strength vs content kept (SSIM, edge score) and a sample grid, next to the JSON.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench import distill_convergence
from muon_ad.bench.common import BenchOutput, median, require_teacher, teacher_ad_seconds, time_ms
from muon_ad.data.images import save_image_atomic
from muon_ad.eval.recognition import train_judges
from muon_ad.eval.report import save_figure, style_content_figure
from muon_ad.eval.style_strength import STYLE_BAR, passes_style_bar, score_stylization, style_strength_ratio
from muon_ad.eval.stylization import (
    EVAL_SEED,
    ad_stylize_pairs,
    builtin_domain_features,
    builtin_labelled_pairs,
    stylize_pairs,
)
from muon_ad.models.teacher import Teacher, load_teacher
from muon_ad.runtime import load_backend
from muon_ad.synthesis.ad_loop import DEFAULT_LR
from muon_ad.synthesis.transfer import STYLIZE_STEPS
from muon_ad.visual import image_grid

ROWS = {"identity": "identity (output = content)", "ad": "AD, Adam", "ad_muon": "AD, Muon",
        "student": "Muon-AD student", "student_adamw": "AdamW student"}
STUDENTS = {"student": "muon", "student_adamw": "adamw"}  # row -> run folder of the distill-convergence race
LABELS = {"ssim": "SSIM to the content", "edge_score": "edge score", "style_fid": "style FID-domain"}


@dataclass
class Settings:
    pairs: int = 16
    ad_steps: int = STYLIZE_STEPS
    students: distill_convergence.Settings = field(default_factory=lambda: distill_convergence.RECIPE)
    large: int = 256
    judge_images: int = 2400  # as bench teacher-quality
    judge_steps: int = 1000
    feature_images: int = 480  # the FID-domain network (builtin_domain_features' defaults)
    feature_steps: int = 300
    kid_subsets: int = 100
    grid_pairs: int = 6
    timed_ad_steps_large: int = 3


FULL = Settings()
QUICK = Settings(pairs=4, ad_steps=6, students=distill_convergence.QUICK, judge_images=160, judge_steps=40,
                 feature_images=120, feature_steps=30, kid_subsets=20, grid_pairs=4, timed_ad_steps_large=1)


def student_outputs(folder: Path, contents: Tensor, styles: Tensor, device: str) -> tuple[Tensor, float]:
    """The student's outputs for every pair and its seconds per image (median of 3 batched passes / pairs)."""
    student = load_backend(folder, device)
    seconds = median(time_ms(lambda: stylize_pairs(student, contents, styles), repeats=3, warmup=1, device=device))
    return stylize_pairs(student, contents, styles), seconds / 1000.0 / len(contents)


def sample_grid(contents: Tensor, styles: Tensor, labels: dict[str, list[str]], outputs: dict[str, Tensor], count: int):
    """Columns = pairs; rows = content (= the identity row's output), style, then each other row's output."""
    shown = {name: images for name, images in outputs.items() if name != "identity"}
    tiles = torch.cat([contents[:count], styles[:count], *(images[:count] for images in shown.values())])
    names = (["content = identity"] * count + [f"style: {p} {f}" for p, f in zip(labels["palette"][:count],
                                                                                   labels["family"][:count])]
             + [ROWS[name] for name in shown for _ in range(count)])
    return image_grid(tiles, names, ncols=count)


def measure(settings: Settings, out: Path, device: str) -> BenchOutput:
    require_teacher(DEFAULT_TEACHER)  # the students are distilled from it too (bench_config)
    teacher = load_teacher(DEFAULT_TEACHER, device=device)
    size = teacher.image_size
    shutil.rmtree(out / "students", ignore_errors=True)  # a leftover run would be resumed, not measured
    distill_convergence.race(settings.students, out / "students", device, seed=settings.students.seeds[0],
                             scales={"muon": 1.0, "adamw": 1.0}, features=None)
    judges = train_judges(settings.judge_images, size, settings.judge_steps)
    feature_net = builtin_domain_features(size, settings.feature_images, settings.feature_steps)

    contents, styles, labels = builtin_labelled_pairs(settings.pairs, size)
    outputs, seconds, repeats = {"identity": contents}, {}, {}
    for row, optimizer in (("ad", "adam"), ("ad_muon", "muon")):
        outputs[row], repeats[f"seconds_{row}"] = ad_stylize_pairs(teacher, contents, styles, optimizer,
                                                                    settings.ad_steps)
        seconds[row] = median(repeats[f"seconds_{row}"])
    for row, run in STUDENTS.items():
        outputs[row], seconds[row] = student_outputs(out / "students" / run / "student", contents, styles, device)

    scores = {row: score_stylization(images, contents, styles, labels, feature_net, judges, settings.kid_subsets)
              for row, images in outputs.items()}
    for row in scores:
        scores[row]["style_strength_ratio"] = style_strength_ratio(
            scores["identity"]["style_fid"], scores["ad"]["style_fid"], scores[row]["style_fid"])
    metrics: dict[str, float] = {f"{key}_{row}": value for row, s in scores.items() for key, value in s.items()}
    metrics["style_strength_ratio"] = scores["student"]["style_strength_ratio"]  # the headline: Muon-AD student
    metrics.update({f"passes_style_bar_{row}": float(passes_style_bar(s["style_strength_ratio"]))
                    for row, s in scores.items()})
    metrics.update({f"seconds_per_image_{row}": value for row, value in seconds.items()})

    # The large resolution: the same pairs, the rows that are cheap there.
    big_contents, big_styles, _ = builtin_labelled_pairs(settings.pairs, settings.large)
    big = {"identity": big_contents}
    for row, run in STUDENTS.items():
        big[row], metrics[f"seconds_per_image_{row}_{settings.large}"] = student_outputs(
            out / "students" / run / "student", big_contents, big_styles, device)
    for row, images in big.items():
        s = score_stylization(images, big_contents, big_styles, labels, feature_net, judges, settings.kid_subsets)
        metrics.update({f"{key}_{row}_{settings.large}": value for key, value in s.items()})
    ad_large = teacher_ad_seconds(teacher, settings.large, settings.timed_ad_steps_large, device)
    metrics[f"seconds_per_image_ad_{settings.large}_estimated"] = ad_large["seconds"]
    repeats[f"ad_step_ms_{settings.large}"] = ad_large["step_ms"]

    out.mkdir(parents=True, exist_ok=True)
    # Style FID, not the ratio, on the y axis: the ratio is an affine map of it (same picture) but NaN when
    # AD does not beat the identity map, and the plot must show every row then too.
    figure = style_content_figure({ROWS[row]: s for row, s in scores.items()}, "style_fid",
                                  ["ssim", "edge_score"], LABELS,
                                  f"{settings.pairs} held-out pairs at {size} px, {settings.ad_steps} AD steps")
    plot = save_figure(figure, out.with_suffix(".png"))
    grid = save_image_atomic(sample_grid(contents, styles, labels, outputs, min(settings.grid_pairs, settings.pairs)),
                             out.with_name(f"{out.name}-samples.png"))
    config = {"settings": {k: v for k, v in asdict(settings).items() if k != "students"},
              "students": {"recipe": "bench distill-convergence (one race: first seed, lr scale 1)",
                           "settings": {k: v for k, v in asdict(settings.students).items() if k != "student"},
                           "runs": str(out / "students")},
              "teacher": DEFAULT_TEACHER, "resolution": size, "large_resolution": settings.large,
              "pairs_seed": EVAL_SEED, "ad_lr": DEFAULT_LR, "style_bar": STYLE_BAR,
              "rows": ROWS, "style_fid": "FID-domain (builtin_domain_features), outputs vs the style images",
              "ad_at_large": (f"not run: estimated from {len(ad_large['step_ms'])} timed AD step(s) at "
                              f"{settings.large} px (seconds_per_image_ad_{settings.large}_estimated); the students "
                              f"and the identity are scored at {settings.large} px too, without a style ratio"),
              "student_seconds": "per image of a batched pass (batch 16), median of 3 after a warm-up",
              "figures": {"pareto": str(plot), "samples": str(grid)}}
    baseline = ("the identity map (output = content, style_strength_ratio 0) and optimisation-based AD with Adam "
                f"({settings.ad_steps} steps, ratio 1) on the same pairs; style FID is FID-domain")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline, repeats=repeats)


def run(quick: bool, device: str) -> BenchOutput:
    out = Path("bench-results") / f"stylization{'-quick' if quick else ''}"
    return measure(QUICK if quick else FULL, out, device)
