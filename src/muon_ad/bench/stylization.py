"""`muon-ad bench stylization`: how much style each method puts into held-out pairs, and how much content it keeps.

Rows, all on the same held-out built-in (content, style) pairs (`builtin_labelled_pairs`, a seed no training
set uses), scored by the same FID-domain network and recognition judges (`eval.style_strength`):
- identity: output = content (keeps everything, stylises nothing: the floor of style strength);
- colour_transfer / overlay: do-nothing-for-texture imitations (`eval.imitations`): the style's CIELAB colour
  statistics on the content (Reinhard), and that blended half and half with the style image pasted over it;
- ad / ad_muon: optimisation-based AD (`synthesis.stylize`) with Adam / Muon, the published 200 steps;
- student / student_adamw: the Muon-AD student and the AdamW baseline student, distilled here from scratch
  with the recipe at its full length (distill-convergence's `RECIPE`: one `race`, the recipe's own lrs), so
  the two are as comparable as in that bench and nothing stale (an older teacher's student) is scored.
style_strength_ratio_<row> = (style_fid_identity − style_fid_<row>) / (style_fid_identity − style_fid_ad).
Texture (`eval.texture`): family_hit_<row> is the headline style figure, copy_score_<row> its guard against pasting
and passes_texture_bar_<row> the pair of them; block_artifact_ratio_<row> is block_energy (the stem's period) over
AD's at the teacher's size, and over the identity map's (the content) at 256 px, where AD is not run. Every figure
is also scored on the two halves of the pairs (disjoint sets): repeats["<figure>_<row>"] = [first half, second].

Resolutions: the teacher's (what the student is trained at) for every row, and `large` (256 px) for every row but
AD: the identity, the imitations and the students, which are fully convolutional and cheap there. Real photos
(`packaged_photos`, at 256 px, the first pairs' styles): family, palette, copy and edge figures of the same rows
(`<figure>_<row>_photos`) and their grid, `stylization-photos.png`. AD is not run at 256 px: its
seconds per image there are estimated from timed steps (as `bench realtime` does) and reported instead.
Seconds per image: AD per pair, one at a time; students per image of a batched pass, after a warm-up.
Figures: a Pareto plot of style strength vs content kept (SSIM, edge score) and a sample grid, next to the JSON.
"""

from __future__ import annotations

import json
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
from muon_ad.eval.imitations import colour_transfer, overlay
from muon_ad.eval.style_strength import (
    COPY_LIMIT,
    FAMILY_BAR,
    STYLE_BAR,
    edge_score,
    palette_family_hits,
    passes_style_bar,
    passes_texture_bar,
    score_stylization,
    style_strength_ratio,
)
from muon_ad.eval.stylization import (
    EVAL_SEED,
    ad_stylize_pairs,
    builtin_domain_features,
    builtin_labelled_pairs,
    packaged_photos,
    stylize_pairs,
)
from muon_ad.eval.texture import copy_score
from muon_ad.models.teacher import Teacher, load_teacher
from muon_ad.runtime import load_backend
from muon_ad.synthesis.ad_loop import DEFAULT_LR
from muon_ad.synthesis.transfer import STYLIZE_STEPS
from muon_ad.visual import image_grid

ROWS = {"identity": "identity (output = content)", "colour_transfer": "colour transfer (Reinhard)",
        "overlay": "overlay (colour transfer + style, half each)", "ad": "AD, Adam", "ad_muon": "AD, Muon",
        "student": "Muon-AD student", "student_adamw": "AdamW student"}
IMITATIONS = {"colour_transfer": colour_transfer, "overlay": overlay}
STUDENTS = {"student": "muon", "student_adamw": "adamw"}  # row -> run folder of the distill-convergence race
LABELS = {"ssim": "SSIM to the content", "edge_score": "edge score", "style_fid": "style FID-domain"}


@dataclass
class Settings:
    pairs: int = 64  # two disjoint halves of 32, each scored too: the spread of every figure
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
QUICK = Settings(pairs=8, ad_steps=6, students=distill_convergence.QUICK, judge_images=160, judge_steps=40,
                 feature_images=120, feature_steps=30, kid_subsets=20, grid_pairs=4, timed_ad_steps_large=1)


def student_outputs(folder: Path, contents: Tensor, styles: Tensor, device: str) -> tuple[Tensor, float]:
    """The student's outputs for every pair and its seconds per image (median of 3 batched passes / pairs)."""
    student = load_backend(folder, device)
    seconds = median(time_ms(lambda: stylize_pairs(student, contents, styles), repeats=3, warmup=1, device=device))
    return stylize_pairs(student, contents, styles), seconds / 1000.0 / len(contents)


def student_stem_stride(folder: Path) -> int:
    """The period of the block grid a student's head could leave (its stem stride), from its config.json."""
    return int(json.loads((folder / "config.json").read_text())["stem_stride"])


def half_scores(outputs: dict[str, Tensor], contents: Tensor, styles: Tensor, labels: dict[str, list[str]], score,
                suffix: str) -> dict[str, list[float]]:
    """Each row's texture and content figures on the first and the second half of the pairs: their spread."""
    half = len(contents) // 2
    parts = [slice(0, half), slice(half, 2 * half)]
    halves: dict[str, list[float]] = {}
    for row, images in outputs.items():
        for part in parts:
            scored = score(images[part], contents[part], styles[part], {k: v[part] for k, v in labels.items()})
            for key in ("family_hit", "palette_hit", "copy_score", "edge_score"):
                halves.setdefault(f"{key}_{row}{suffix}", []).append(scored[key])
    return halves


def photo_scores(images: Tensor, photos: Tensor, styles: Tensor, labels: dict[str, list[str]],
                 judges: dict) -> dict[str, float]:
    """Texture and content figures of outputs on the packaged photos (too few for FID): hits, copy, edges."""
    hits = palette_family_hits(images, labels, judges)
    return {"family_hit": hits["family"], "palette_hit": hits["palette"], "copy_score": copy_score(images, styles),
            "edge_score": edge_score(images, photos)}


def sample_grid(contents: Tensor, styles: Tensor, labels: dict[str, list[str]], outputs: dict[str, Tensor], count: int,
                scale: int = 2):
    """Columns = pairs; rows = content (= the identity row's output), style, then each other row's output."""
    shown = {name: images for name, images in outputs.items() if name != "identity"}
    tiles = torch.cat([contents[:count], styles[:count], *(images[:count] for images in shown.values())])
    names = (["content = identity"] * count + [f"style: {p} {f}" for p, f in zip(labels["palette"][:count],
                                                                                   labels["family"][:count])]
             + [ROWS[name] for name in shown for _ in range(count)])
    return image_grid(tiles, names, ncols=count, scale=scale)


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
    period = student_stem_stride(out / "students" / STUDENTS["student"] / "student")
    outputs, seconds, repeats = {"identity": contents}, {}, {}
    outputs.update({row: imitate(contents, styles) for row, imitate in IMITATIONS.items()})
    for row, optimizer in (("ad", "adam"), ("ad_muon", "muon")):
        outputs[row], repeats[f"seconds_{row}"] = ad_stylize_pairs(teacher, contents, styles, optimizer,
                                                                    settings.ad_steps)
        seconds[row] = median(repeats[f"seconds_{row}"])
    for row, run in STUDENTS.items():
        outputs[row], seconds[row] = student_outputs(out / "students" / run / "student", contents, styles, device)

    def score(images: Tensor, contents: Tensor, styles: Tensor, labels: dict[str, list[str]]) -> dict[str, float]:
        return score_stylization(images, contents, styles, labels, feature_net, judges, settings.kid_subsets, period)

    scores = {row: score(images, contents, styles, labels) for row, images in outputs.items()}
    for row in scores:
        scores[row]["style_strength_ratio"] = style_strength_ratio(
            scores["identity"]["style_fid"], scores["ad"]["style_fid"], scores[row]["style_fid"])
        scores[row]["block_artifact_ratio"] = scores[row]["block_energy"] / scores["ad"]["block_energy"]
    metrics: dict[str, float] = {f"{key}_{row}": value for row, s in scores.items() for key, value in s.items()}
    metrics["style_strength_ratio"] = scores["student"]["style_strength_ratio"]  # FID-domain: blind to texture
    metrics.update({f"passes_style_bar_{row}": float(passes_style_bar(s["style_strength_ratio"]))
                    for row, s in scores.items()})
    metrics.update({f"seconds_per_image_{row}": value for row, value in seconds.items()})
    repeats.update(half_scores(outputs, contents, styles, labels, score, ""))

    # The large resolution: the same pairs, the rows that are cheap there.
    big_contents, big_styles, _ = builtin_labelled_pairs(settings.pairs, settings.large)
    big = {"identity": big_contents, **{row: imitate(big_contents, big_styles) for row, imitate in IMITATIONS.items()}}
    for row, run in STUDENTS.items():
        big[row], metrics[f"seconds_per_image_{row}_{settings.large}"] = student_outputs(
            out / "students" / run / "student", big_contents, big_styles, device)
    big_scores = {row: score(images, big_contents, big_styles, labels) for row, images in big.items()}
    for row, s in big_scores.items():
        s["block_artifact_ratio"] = s["block_energy"] / big_scores["identity"]["block_energy"]
        metrics.update({f"{key}_{row}_{settings.large}": value for key, value in s.items()})
    repeats.update(half_scores(big, big_contents, big_styles, labels, score, f"_{settings.large}"))
    for suffix, table in (("", scores), (f"_{settings.large}", big_scores)):
        metrics.update({f"passes_texture_bar_{row}{suffix}": float(passes_texture_bar(s["family_hit"], s["copy_score"]))
                        for row, s in table.items()})
    # Real photos (`packaged_photos`) as content, with the first pairs' styles, at the large resolution.
    photos, photo_names = packaged_photos(settings.large)
    _, photo_styles, photo_labels = builtin_labelled_pairs(len(photos), settings.large)
    on_photos = {"identity": photos, **{row: imitate(photos, photo_styles) for row, imitate in IMITATIONS.items()},
                 **{row: stylize_pairs(load_backend(out / "students" / run / "student", device), photos, photo_styles)
                    for row, run in STUDENTS.items()}}  # too few photos to time
    for row, images in on_photos.items():
        scored = photo_scores(images, photos, photo_styles, photo_labels, judges)
        metrics.update({f"{key}_{row}_photos": value for key, value in scored.items()})
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
    photo_grid = save_image_atomic(sample_grid(photos, photo_styles, photo_labels, on_photos, len(photos), scale=1),
                                   out.with_name(f"{out.name}-photos.png"))
    config = {"settings": {k: v for k, v in asdict(settings).items() if k != "students"},
              "students": {"recipe": "bench distill-convergence (one race: first seed, lr scale 1)",
                           "settings": {k: v for k, v in asdict(settings.students).items() if k != "student"},
                           "runs": str(out / "students")},
              "teacher": DEFAULT_TEACHER, "resolution": size, "large_resolution": settings.large,
              "pairs_seed": EVAL_SEED, "ad_lr": DEFAULT_LR, "style_bar": STYLE_BAR,
              "texture_bar": {"family_hit_at_least": FAMILY_BAR, "copy_score_at_most": COPY_LIMIT},
              "block_period": period, "halves": "repeats[<figure>_<row>]: the figure on pairs [0, n/2) and [n/2, n)",
              "rows": ROWS, "style_fid": "FID-domain (builtin_domain_features), outputs vs the style images",
              "ad_at_large": (f"not run: estimated from {len(ad_large['step_ms'])} timed AD step(s) at "
                              f"{settings.large} px (seconds_per_image_ad_{settings.large}_estimated); the students "
                              f"and the identity are scored at {settings.large} px too, without a style ratio"),
              "student_seconds": "per image of a batched pass (batch 16), median of 3 after a warm-up",
              "photos": {"names": photo_names, "size": settings.large,
                         "keys": "<figure>_<row>_photos, styles of the first pairs"},
              "figures": {"pareto": str(plot), "samples": str(grid), "photos": str(photo_grid)}}
    baseline = ("the identity map (output = content, style_strength_ratio 0) and optimisation-based AD with Adam "
                f"({settings.ad_steps} steps, ratio 1) on the same pairs; style FID is FID-domain")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline, repeats=repeats)


def run(quick: bool, device: str) -> BenchOutput:
    out = Path("bench-results") / f"stylization{'-quick' if quick else ''}"
    return measure(QUICK if quick else FULL, out, device)
