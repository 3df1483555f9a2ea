"""`muon-ad bench distill-convergence`: the Muon-AD student recipe vs the same recipe on AdamW.

Setting. The distillation recipe (`muon_ad.recipes.distill`) with the CPU preset's student, losses and
curriculum shape, on the built-in teacher and built-in data, scaled to the bench budget: N steps split
1:2:3 over the three phases (the authors' 500 / 1000 / 1500), batch 8 / 8 / 4. Muon-AD = Muon through
`build_optimizer` + conflict projection; the baseline = `as_baseline`: AdamW everywhere, no projection.
Both runs start from the same student weights and draw the same pairs, timesteps and noise (same seed),
and are validated on the same held-out pairs with the same FID-domain network (trained once, by the
first run, on the style bank's texture labels; FID-domain is not comparable with Inception FIDs).

What is compared. Every `val_every` steps, the EMA student's validation loss on fixed pairs, timesteps
and noise, with fixed weights (L_AD + kl_weight·L_KL + 0.25·L_content). target = AdamW's value at step
N; muon_steps_to_adamw_final = the step at which Muon's curve first reaches it (linear interpolation
between validations); speedup = N / that, and 0 when Muon never reaches it within N. FID-domain (the
student's images vs their style images) and SSIM (vs their content images) of both runs at step N.
The median seconds per step of each run are reported too (Muon's orthogonalisation and the projection's
second backward pass cost time; steps are what the speedup counts).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench.common import BenchOutput, median, require_teacher
from muon_ad.config import to_dict
from muon_ad.models.student import StudentConfig
from muon_ad.recipes.distill import DistillConfig, as_baseline, distill


@dataclass
class Settings:
    steps: int = 240  # N, split 1:2:3 over the phases
    batch_size: int = 8  # phase 3 uses half
    val_every: int = 20
    val_pairs: int = 32
    images: int = 512  # content and style images each, validation pairs included
    fid_feature_steps: int = 100  # the FID-domain CNN: ~1 min of a 10-minute budget
    student: StudentConfig | None = None  # None: the CPU preset (StudentConfig defaults)


FULL = Settings()
QUICK = Settings(steps=12, batch_size=2, val_every=4, val_pairs=4, images=12, fid_feature_steps=10,
                 student=StudentConfig(base_channels=8, heads=2, style_channels=(8, 16), style_dim=16, norm_groups=4))


def bench_config(settings: Settings, out: Path, device: str) -> DistillConfig:
    """The Muon-AD recipe at the bench's size (the baseline is `as_baseline` of it)."""
    cfg = DistillConfig()
    if settings.student is not None:
        cfg.student = settings.student
    n, b = settings.steps, settings.batch_size
    lengths, batches = (n // 6, n // 3, n - n // 6 - n // 3), (b, b, b // 2 or 1)
    for (_, phase), steps, batch in zip(cfg.curriculum.phases(), lengths, batches):
        phase.steps, phase.batch_size = steps, batch
    cfg.curriculum.warmup_steps = min(cfg.curriculum.warmup_steps, n // 10)
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


def measure(settings: Settings, out: Path, device: str) -> BenchOutput:
    shutil.rmtree(out, ignore_errors=True)  # a leftover run would be resumed, not measured
    muon_cfg = bench_config(settings, out, device)
    adamw_cfg = as_baseline(muon_cfg)
    adamw_cfg.train.out_dir = str(out / "adamw")
    distill(muon_cfg)
    adamw_cfg.validation.fid_features_path = str(out / "muon" / "fid-domain")  # the same FID-domain network
    distill(adamw_cfg)
    muon, adamw = read_curve(out / "muon"), read_curve(out / "adamw")
    target = adamw[-1]["val_loss"]
    reached = steps_to_reach(muon, target)
    metrics = {
        "adamw_final_val_loss": target,
        "muon_final_val_loss": muon[-1]["val_loss"],
        "muon_steps_to_adamw_final": reached,
        "adamw_steps": settings.steps,
        "speedup": settings.steps / reached if reached else 0.0,
        "fid_muon": muon[-1]["fid"],
        "fid_adamw": adamw[-1]["fid"],
        "fid_reduction": 1 - muon[-1]["fid"] / adamw[-1]["fid"],
        "ssim_muon": muon[-1]["ssim"],
        "ssim_adamw": adamw[-1]["ssim"],
        "ssim_gain": muon[-1]["ssim"] / adamw[-1]["ssim"] - 1,
        "seconds_per_step_muon": seconds_per_step(out / "muon"),  # indicative: the runs are sequential on a
        "seconds_per_step_adamw": seconds_per_step(out / "adamw"),  # shared machine
    }
    config = {"settings": {k: v for k, v in asdict(settings).items() if k != "student"}, "fid": "FID-domain",
              "recipe": to_dict(muon_cfg), "curves": {"muon": muon, "adamw": adamw}, "runs": str(out)}
    baseline = ("the same recipe (student init, pairs, timesteps, curriculum, validation) with AdamW everywhere and "
                "no conflict projection; FID is FID-domain (a CNN trained on the built-in textures)")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline)


def run(quick: bool, device: str) -> BenchOutput:
    require_teacher(DEFAULT_TEACHER)
    out = Path("bench-results") / f"distill-convergence{'-quick' if quick else ''}-runs"
    return measure(QUICK if quick else FULL, out, device)
