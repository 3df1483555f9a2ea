"""`muon-ad bench distill-convergence`: the Muon-AD student recipe vs the same recipe on AdamW.

Setting. The distillation recipe (`muon_ad.recipes.distill`) with the CPU preset's student, losses and
curriculum shape, on the built-in teacher and built-in data, scaled to the bench budget: N steps split
1:2:3 over the three phases (the authors' 500 / 1000 / 1500), batch 8, trained on the teacher's AD targets
(one bank per image set, shared by every run on it). Muon-AD = Muon through
`build_optimizer` + conflict projection; the baseline = `as_baseline`: AdamW everywhere, no projection.
Both runs start from the same student weights and draw the same pairs, timesteps and noise (same seed),
and are validated on the same held-out pairs with the same FID-domain network (trained once, by the
first run, on the style bank's texture labels; FID-domain is not comparable with Inception FIDs).

What is compared. Every `val_every` steps, the EMA student's validation loss on fixed pairs with fixed weights
(the recipe's: the held-out L1 to the validation pairs' own AD targets). target = AdamW's value at step
N; muon_steps_to_adamw_final = the step at which Muon's curve first reaches it (linear interpolation
between validations); speedup = N / that, and 0 when Muon never reaches it within N. FID-domain (the
student's images vs their style images) and SSIM (vs their content images) of both runs at step N.
The median seconds per step of each run are reported too (Muon's orthogonalisation and the projection's
second backward pass cost time; steps are what the speedup counts). style_strength_muon / _adamw: each
student's style_strength_ratio on held-out labelled pairs (`StyleReference`: 0 = the identity map's style
FID-domain, 1 = optimisation-based AD's), because FID-domain against the validation styles alone does not
tell a near-identity student from a stylising one.

Statistics and fair tuning. The race runs once per seed in `seeds` (student init and every draw); figures
are means over seeds, `speedup_std` the sample standard deviation. Before it, each optimiser's lr is tuned:
every phase's lr times each scale of `lr_scales`, at the full budget, on other image banks than the race's
(`TUNING_DATA_SEED`); each keeps the scale with the lowest final validation loss.
"""

from __future__ import annotations

import csv
import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench.common import BenchOutput, median, require_teacher
from muon_ad.config import to_dict
from muon_ad.eval import compute_fid
from muon_ad.eval.style_strength import style_strength_ratio
from muon_ad.eval.stylization import (
    EVAL_SEED,
    ad_stylize_pairs,
    builtin_domain_features,
    builtin_labelled_pairs,
    stylize_pairs,
)
from muon_ad.models.teacher import load_teacher
from muon_ad.models.student import StudentConfig
from muon_ad.recipes.distill import DistillConfig, as_baseline, distill
from muon_ad.runtime import load_backend
from muon_ad.synthesis.transfer import STYLIZE_STEPS


@dataclass
class Settings:
    steps: int = 600  # N, split 1:2:3 over the phases (the recipe: 1200)
    batch_size: int = 8
    val_every: int = 50
    val_pairs: int = 32
    images: int = 256  # content and style images each, validation pairs included
    target_pairs: int = 448  # the AD-target bank (distill.target_*), shared by the runs on the same data
    target_steps: int = 25
    fid_feature_steps: int = 100  # the FID-domain CNN: ~1 min of a 10-minute budget
    seeds: tuple[int, ...] = (0, 1, 2)  # train.seed of each Muon-AD / AdamW pair of runs (init and every draw)
    lr_scales: tuple[float, ...] = (0.5, 1.0, 2.0)  # the lr grid: multipliers of every phase's lr, tuned per optimiser
    style_pairs: int = 16  # held-out labelled pairs the style strength is measured on (identity and AD beside)
    ad_steps: int = STYLIZE_STEPS  # the AD reference's budget (published: 200)
    style_feature_steps: int = 300  # its FID-domain network (builtin_domain_features)
    student: StudentConfig | None = None  # None: the CPU preset (StudentConfig defaults)


FULL = Settings()
RECIPE = Settings(steps=1200, val_every=200, seeds=(0,), lr_scales=(1.0,))  # configs/stylize-cpu.yaml's length
QUICK = Settings(steps=12, batch_size=2, val_every=4, val_pairs=4, images=12, fid_feature_steps=10, seeds=(0,),
                 lr_scales=(0.5, 1.0), style_pairs=4, ad_steps=6, style_feature_steps=30, target_pairs=8, target_steps=2,
                 student=StudentConfig(base_channels=8, heads=2, style_channels=(8, 16), style_dim=16, norm_groups=4))


TUNING_DATA_SEED = 10  # lrs are tuned on other image banks (scenes 10, textures 11) than the race's (0, 1)


def bench_config(settings: Settings, out: Path, device: str, lr_scale: float = 1.0, data_seed: int = 0) -> DistillConfig:
    """The Muon-AD recipe at the bench's size, every phase's lr times `lr_scale`, on the image banks of `data_seed`
    (the baseline is `as_baseline`). Runs on the same data share one AD-target bank, next to `out`."""
    cfg = DistillConfig()
    if settings.student is not None:
        cfg.student = settings.student
    n = settings.steps
    for (_, phase), steps in zip(cfg.curriculum.phases(), (n // 6, n // 3, n - n // 6 - n // 3)):
        phase.steps, phase.batch_size, phase.lr = steps, settings.batch_size, phase.lr * lr_scale
    cfg.curriculum.warmup_steps = min(cfg.curriculum.warmup_steps, n // 10)
    cfg.data.seed = data_seed
    cfg.distill.target_pairs, cfg.distill.target_steps = settings.target_pairs, settings.target_steps
    cfg.distill.target_path = str(out.parent / f"ad-targets-data{data_seed}.safetensors")
    cfg.data.content_count = cfg.data.style_count = settings.images
    cfg.data.val_pairs = settings.val_pairs
    cfg.validation.every = settings.val_every
    cfg.validation.fid_feature_steps = settings.fid_feature_steps
    cfg.train.out_dir, cfg.train.teacher, cfg.train.device = str(out / "muon"), DEFAULT_TEACHER, device
    cfg.train.checkpoint_every = n  # only at the end: checkpoints are not what is measured
    return cfg


def read_curve(run: Path) -> list[dict[str, float]]:
    with open(run / "val.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def seconds_per_step(run: Path) -> float:
    """Median wall time of a training step (the median leaves out the steps that also validated)."""
    with open(run / "log.csv") as f:
        seconds = [0.0] + [float(row["seconds"]) for row in csv.DictReader(f)]
    return median([b - a for a, b in zip(seconds, seconds[1:])])


def steps_to_reach(curve: list[dict[str, float]], target: float) -> float | None:
    """The (interpolated) step at which val_loss first reaches `target`; None if it never does.

    The start does not count: a curve that starts at or below the target reaches it at its first validation.
    """
    for before, after in zip(curve, curve[1:]):
        if after["val_loss"] <= target:
            if before["val_loss"] <= target:
                return after["step"]
            fraction = (before["val_loss"] - target) / (before["val_loss"] - after["val_loss"])
            return before["step"] + fraction * (after["step"] - before["step"])
    return None


def tune(settings: Settings, out: Path, device: str) -> dict:
    """Each optimiser's lr scale: the one of `settings.lr_scales` with the lowest final validation loss on held-out
    image banks (`TUNING_DATA_SEED`), at the full step budget, with the first seed."""
    losses: dict[str, dict[str, float]] = {"muon": {}, "adamw": {}}
    features = None
    for scale in settings.lr_scales:
        muon_cfg = bench_config(settings, out, device, scale, TUNING_DATA_SEED)
        for name, cfg in (("muon", muon_cfg), ("adamw", as_baseline(muon_cfg))):
            cfg.train.out_dir = str(out / f"{name}-x{scale:g}")
            cfg.train.seed = settings.seeds[0]
            cfg.validation.fid_features_path = str(features) if features is not None else None
            distill(cfg)
            features = features or Path(cfg.train.out_dir) / "fid-domain"
            losses[name][f"{scale:g}"] = read_curve(Path(cfg.train.out_dir))[-1]["val_loss"]
    return {"final_val_loss_by_scale": losses,
            "best_scale": {name: float(min(by_scale, key=by_scale.get)) for name, by_scale in losses.items()}}


def race(settings: Settings, out: Path, device: str, seed: int, scales: dict[str, float],
         features: Path | None) -> dict:
    """One Muon-AD run and its AdamW baseline with `seed`, each at its tuned lr scale; both scored by the
    FID-domain network at `features` (None: the Muon-AD run trains it, in its own folder)."""
    muon_cfg = bench_config(settings, out, device, scales["muon"])
    muon_cfg.train.seed = seed
    muon_cfg.validation.fid_features_path = str(features) if features is not None else None
    adamw_cfg = as_baseline(bench_config(settings, out, device, scales["adamw"]))
    adamw_cfg.train.out_dir, adamw_cfg.train.seed = str(out / "adamw"), seed
    distill(muon_cfg)
    adamw_cfg.validation.fid_features_path = str(features or out / "muon" / "fid-domain")  # one network scores both
    distill(adamw_cfg)
    muon, adamw = read_curve(out / "muon"), read_curve(out / "adamw")
    reached = steps_to_reach(muon, adamw[-1]["val_loss"])
    return {"seed": seed, "adamw_final_val_loss": adamw[-1]["val_loss"], "muon_final_val_loss": muon[-1]["val_loss"],
            "muon_steps_to_adamw_final": reached, "speedup": settings.steps / reached if reached else 0.0,
            "fid_muon": muon[-1]["fid"], "fid_adamw": adamw[-1]["fid"],
            "ssim_muon": muon[-1]["ssim"], "ssim_adamw": adamw[-1]["ssim"],
            "seconds_per_step_muon": seconds_per_step(out / "muon"),  # indicative: the runs are sequential on a
            "seconds_per_step_adamw": seconds_per_step(out / "adamw"),  # shared machine
            "curves": {"muon": muon, "adamw": adamw}, "recipe": to_dict(muon_cfg)}


@dataclass
class StyleReference:
    """Held-out labelled pairs, the FID-domain network that scores them, and the style FID-domain of the two
    reference rows on them: the identity map (style strength 0) and AD with Adam (style strength 1)."""

    contents: Tensor
    styles: Tensor
    feature: torch.nn.Module
    style_fid_identity: float
    style_fid_ad: float

    @classmethod
    def build(cls, settings: Settings, device: str) -> StyleReference:
        teacher = load_teacher(DEFAULT_TEACHER, device)
        contents, styles, _ = builtin_labelled_pairs(settings.style_pairs, teacher.image_size)
        feature = builtin_domain_features(teacher.image_size, steps=settings.style_feature_steps)
        ad, _ = ad_stylize_pairs(teacher, contents, styles, "adam", settings.ad_steps)
        return cls(contents, styles, feature, compute_fid(styles, contents, feature), compute_fid(styles, ad, feature))

    def strength(self, student: Path, device: str) -> float:
        """style_strength_ratio of the saved student on these pairs."""
        images = stylize_pairs(load_backend(student, device), self.contents, self.styles)
        return style_strength_ratio(self.style_fid_identity, self.style_fid_ad,
                                    compute_fid(self.styles, images, self.feature))


def measure(settings: Settings, out: Path, device: str) -> BenchOutput:
    shutil.rmtree(out, ignore_errors=True)  # a leftover run would be resumed, not measured
    tuning = tune(settings, out / "tuning", device)
    reference = StyleReference.build(settings, device)
    runs = []
    for seed in settings.seeds:
        features = out / f"seed-{settings.seeds[0]}" / "muon" / "fid-domain" if runs else None
        runs.append(race(settings, out / f"seed-{seed}", device, seed, tuning["best_scale"], features))
        runs[-1].update({f"style_strength_{name}": reference.strength(out / f"seed-{seed}" / name / "student", device)
                         for name in ("muon", "adamw")})

    def mean(key: str) -> float:
        return statistics.fmean(run[key] for run in runs)

    def spread(key: str) -> float:
        return statistics.stdev(run[key] for run in runs) if len(runs) > 1 else 0.0

    reached = [run["muon_steps_to_adamw_final"] for run in runs if run["muon_steps_to_adamw_final"] is not None]
    metrics = {
        "adamw_final_val_loss": mean("adamw_final_val_loss"),
        "muon_final_val_loss": mean("muon_final_val_loss"),
        "muon_steps_to_adamw_final": statistics.fmean(reached) if reached else None,  # over the seeds that reached
        "reached_seeds": len(reached),
        "adamw_steps": settings.steps,
        "speedup": mean("speedup"),  # 0 for a seed whose Muon-AD run never reached AdamW's final loss
        "speedup_std": spread("speedup"),
        "seeds": len(runs),
        "fid_muon": mean("fid_muon"),
        "fid_adamw": mean("fid_adamw"),
        "fid_reduction": 1 - mean("fid_muon") / mean("fid_adamw"),
        "ssim_muon": mean("ssim_muon"),
        "ssim_adamw": mean("ssim_adamw"),
        "ssim_gain": mean("ssim_muon") / mean("ssim_adamw") - 1,
        "style_strength_muon": mean("style_strength_muon"),  # 0: the identity map; 1: AD's style FID-domain
        "style_strength_adamw": mean("style_strength_adamw"),
        "style_strength_muon_std": spread("style_strength_muon"),
        "seconds_per_step_muon": mean("seconds_per_step_muon"),
        "seconds_per_step_adamw": mean("seconds_per_step_adamw"),
        "lr_scale_muon": tuning["best_scale"]["muon"],
        "lr_scale_adamw": tuning["best_scale"]["adamw"],
    }
    config = {"settings": {k: v for k, v in asdict(settings).items() if k != "student"}, "fid": "FID-domain",
              "recipe": runs[0]["recipe"], "runs": [{k: v for k, v in run.items() if k != "recipe"} for run in runs],
              "folder": str(out), "aggregation": "mean over seeds; *_std: sample standard deviation",
              "tuning": {**tuning, "grid": list(settings.lr_scales), "data_seed": TUNING_DATA_SEED},
              "style_strength": {"style_fid_identity": reference.style_fid_identity,
                                 "style_fid_ad": reference.style_fid_ad, "pairs": settings.style_pairs,
                                 "ad_steps": settings.ad_steps, "pairs_seed": EVAL_SEED,
                                 "what": "style FID-domain on held-out labelled pairs, identity = 0, AD (Adam) = 1"}}
    baseline = ("the same recipe (student init, pairs, timesteps, curriculum, validation) with AdamW everywhere and "
                "no conflict projection, for each seed; FID is FID-domain (a CNN trained on the built-in textures)")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline)


def run(quick: bool, device: str) -> BenchOutput:
    require_teacher(DEFAULT_TEACHER)
    out = Path("bench-results") / f"distill-convergence{'-quick' if quick else ''}-runs"
    return measure(QUICK if quick else FULL, out, device)
