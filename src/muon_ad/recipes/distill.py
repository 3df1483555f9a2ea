"""Recipe: distil the real-time stylisation student from the frozen teacher (`muon-ad distill CONFIG`).

Reads top to bottom: load the teacher → content and style banks, and their latents (once) → student,
EMA, optimizer (Muon through `build_optimizer`), conflict projection, curriculum → resume from the last
checkpoint if there is one → each step: the curriculum's plan (phase, lr, weights, frozen parts, hooks),
a batch of random (content, style) pairs, the losses through the teacher, the two objectives
L_distill = L_AD + kl_weight·L_KL (weighted by the style weight) and λ·L_content, combined with
conflict projection, gradient clipping, optimizer step, EMA → periodic validation with the EMA weights
on a fixed set (loss, SSIM to the content, FID-domain to the styles, a sample grid) and checkpoints →
save the EMA student (`save_student`).

Baseline (the paper's comparison): the same recipe with AdamW everywhere and no conflict projection,
`muon-ad distill CONFIG --baseline` (= optimizer.name=adamw distill.conflict_projection=false, writing to
OUT_DIR-adamw).

Logs: log.csv (every step), val.csv (every validation), TensorBoard events in tensorboard/, sample
grids in samples/. Ctrl-C saves a checkpoint; running the same command again resumes the run.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from muon_ad import DEFAULT_TEACHER
from muon_ad.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from muon_ad.config import save_config
from muon_ad.data.images import save_image_atomic
from muon_ad.distill.curriculum import Curriculum, CurriculumConfig, StepPlan
from muon_ad.distill.data import DistillDataConfig, LabelledBank, build_banks
from muon_ad.distill.losses import DistillLossConfig, TeacherLosses
from muon_ad.errors import UserError
from muon_ad.eval import DomainFeatures, compute_fid, load_feature_extractor, ssim, train_domain_features
from muon_ad.models.student import Student, StudentConfig, save_student
from muon_ad.models.teacher import load_teacher
from muon_ad.optim import ConflictProjection, OptimizerConfig, build_optimizer
from muon_ad.visual import image_grid

log = logging.getLogger("muon_ad.distill")

Hook = Callable[[StepPlan, Student, torch.optim.Optimizer], None]


@dataclass
class ValidationConfig:
    every: int = 50  # steps between validations (the first and the last step are always validated)
    content_weight: float = 0.25  # val_loss = L_AD + kl_weight·L_KL + content_weight·L_content, fixed across runs
    batch_size: int = 16
    fid_features: str = "domain"  # "domain" (FID-domain, a CNN trained on the style labels) or "inception"
    fid_features_path: str | None = None  # None with "domain": train one on the style bank, cache it in out_dir
    fid_feature_steps: int = 200
    fid_feature_widths: tuple[int, ...] = (16, 32, 64, 128)  # small: it only has to tell style classes apart
    grid: int = 8  # validation pairs shown in the sample grid
    seed: int = 0  # fixes the validation timesteps and noise


@dataclass
class DistillTrainConfig:
    out_dir: str = "runs/stylize-cpu"
    teacher: str = DEFAULT_TEACHER
    device: str = "cpu"
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, none on CPU (slower there); or "bf16" / "none"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    seed: int = 0


def _optimizer_defaults() -> OptimizerConfig:
    # Muon's lr is matched to AdamW's, so the curriculum's lrs mean the same update size for both.
    return OptimizerConfig(adjust_lr="match_rms_adamw", lr=1e-3, weight_decay=0.01, adamw_lr=1e-3)


@dataclass
class StylizeConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    optimizer: OptimizerConfig = field(default_factory=_optimizer_defaults)
    distill: DistillLossConfig = field(default_factory=DistillLossConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: DistillTrainConfig = field(default_factory=DistillTrainConfig)


def as_baseline(cfg: StylizeConfig) -> StylizeConfig:
    """The paper's baseline: the same recipe with AdamW everywhere and no conflict projection."""
    baseline = copy.deepcopy(cfg)
    baseline.optimizer.name = "adamw"
    baseline.distill.conflict_projection = False
    baseline.train.out_dir = f"{cfg.train.out_dir.rstrip('/')}-adamw"
    return baseline


@dataclass
class PairSet:
    """Images (uint8 banks) and their teacher latents: content and style."""

    content: LabelledBank
    style: LabelledBank
    content_latents: torch.Tensor
    style_latents: torch.Tensor

    @classmethod
    def encode(cls, content: LabelledBank, style: LabelledBank, losses: TeacherLosses, device: torch.device) -> PairSet:
        """The banks with their latents, encoded once (the VAE is frozen and references need no graph)."""
        latents = [losses.encode(bank.batch(slice(None)).to(device)) for bank in (content, style)]
        return cls(content, style, *latents)

    def batch(self, content_index: torch.Tensor, style_index: torch.Tensor, device: torch.device):
        return (self.content.batch(content_index).to(device), self.style.batch(style_index).to(device),
                self.content_latents[content_index], self.style_latents[style_index])


LOG_FIELDS = ["step", "phase", "lr", "batch_size", "loss", "ad", "content", "kl", "style_weight", "content_weight",
              "ssim", "grad_norm", "keep_rate", "qat", "conflict_acted", "seconds"]
VAL_FIELDS = ["step", "val_loss", "ad", "content", "kl", "ssim", "fid"]


def distill(cfg: StylizeConfig, hooks: Sequence[Hook] = ()) -> Path:
    """Run (or resume) the recipe; returns the folder of the saved (EMA) student.

    `hooks` run before every step with the step's plan, the student and the optimizer: the plug-in point
    for pruning (plan.keep_rate; `optimizer.set_mask`) and quantisation-aware training (plan.qat).
    """
    cfg.student.check()  # command-line overrides skip __post_init__: fail before the slow loading
    curriculum = Curriculum(cfg.curriculum)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    device = torch.device(cfg.train.device)
    teacher = load_teacher(cfg.train.teacher, device)
    content, style = build_banks(cfg.data, teacher.image_size)
    torch.manual_seed(cfg.train.seed)  # the student's init and then every draw of the run (pairs, t, noise)
    student = Student(cfg.student).to(device)
    losses = TeacherLosses(teacher, student, cfg.distill)
    (train_content, val_content), (train_style, val_style) = (b.split(cfg.data.val_pairs) for b in (content, style))
    train = PairSet.encode(train_content, train_style, losses, device)
    val = PairSet.encode(val_content, val_style, losses, device)
    feature = _fid_features(cfg, train_style, out)

    optimizer = build_optimizer(student, cfg.optimizer)
    projection = (ConflictProjection(cfg.distill.conflict_threshold, cfg.distill.conflict_rate)
                  if cfg.distill.conflict_projection else None)
    ema = EMAModel(student.parameters(), decay=cfg.train.ema_decay, use_ema_warmup=True)
    total = cfg.curriculum.total_steps

    step = 0
    if (folder := latest_checkpoint(out)) is not None:
        state = load_checkpoint(folder, {"student": student})
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        curriculum.load_state_dict(state["curriculum"])
        if projection is not None:
            projection.checked, projection.acted = state["conflicts"]
        set_rng_state(state["rng"])
        step = state["step"]
        log.info("resuming from %s (step %d of %d)", folder, step, total)

    def checkpoint() -> None:
        conflicts = [projection.checked, projection.acted] if projection is not None else [0, 0]
        save_checkpoint(out, step, {"student": student}, {
            "optimizer": optimizer.state_dict(), "ema": ema.state_dict(), "curriculum": curriculum.state_dict(),
            "conflicts": conflicts, "rng": rng_state()})

    def validation() -> None:
        with _ema_weights(ema, student):
            metrics, images = validate(student, losses, val, cfg, feature, device)
        writer.writerow_val([step, *(f"{metrics[k]:.5f}" for k in VAL_FIELDS[1:])])
        for key, value in metrics.items():
            board.add_scalar(f"val/{key}", value, step)
        grid = _sample_grid(val, images, cfg.validation.grid)
        save_image_atomic(grid, out / "samples" / f"step-{step:07d}.png")
        save_image_atomic(grid, out / "samples.png")
        log.info("step %d: val_loss %.4f, SSIM %.3f, %s %.2f", step, metrics["val_loss"], metrics["ssim"],
                 _fid_label(cfg), metrics["fid"])

    writer = _CsvLogs(out, fresh=step == 0)
    board = SummaryWriter(str(out / "tensorboard"))
    bar = tqdm(total=total, initial=step, desc="distill", dynamic_ncols=True)
    start = time.time()
    try:
        if step == 0:
            validation()  # the starting point of the curves
        while step < total:
            plan = curriculum.plan(step)
            if plan.phase_started:
                log.info("step %d: phase %d (%s): lr %g, batch %d, style %g, content %g%s", step, plan.phase, plan.name,
                         cfg.curriculum.phases()[plan.phase - 1][1].lr, plan.batch_size, plan.style_weight,
                         plan.content_weight, ", style encoder frozen" if plan.freeze_style_encoder else "")
                board.add_text("curriculum", f"step {step}: phase {plan.phase} ({plan.name})", step)
            student.style_encoder.requires_grad_(not plan.freeze_style_encoder)
            for group in optimizer.param_groups:
                group["lr"] = plan.lr
            for hook in hooks:
                hook(plan, student, optimizer)

            result = train_step(plan, student, losses, optimizer, projection, train, cfg, device)
            ema.step(student.parameters())
            curriculum.observe(plan, result["ssim"])
            step += 1

            row = {"step": step, "phase": plan.phase, "lr": plan.lr, "batch_size": plan.batch_size, **result,
                   "style_weight": plan.style_weight, "content_weight": plan.content_weight,
                   "keep_rate": plan.keep_rate, "qat": int(plan.qat),
                   "conflict_acted": projection.acted if projection is not None else 0, "seconds": time.time() - start}
            writer.writerow_train(row)
            for key in ("loss", "ad", "content", "kl", "content_weight", "ssim", "grad_norm", "lr", "keep_rate"):
                board.add_scalar(f"train/{key}", row[key], step)
            bar.set_postfix(phase=plan.phase, loss=f"{result['loss']:.4f}", ssim=f"{result['ssim']:.3f}")
            bar.update()
            if step % cfg.validation.every == 0 or step == total:
                validation()
            if step % cfg.train.checkpoint_every == 0 or step == total:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        log.warning("interrupted at step %d: checkpoint saved; run the same command to resume", step)
        raise
    finally:
        bar.close()
        writer.close()
        board.close()

    ema.copy_to(student.parameters())
    folder = save_student(student, out / "student")
    log.info("student saved to %s, samples in %s", folder, out / "samples.png")
    return folder


def train_step(
    plan: StepPlan, student: Student, losses: TeacherLosses, optimizer: torch.optim.Optimizer,
    projection: ConflictProjection | None, train: PairSet, cfg: StylizeConfig, device: torch.device,
) -> dict[str, float]:
    """One optimizer step on a random batch of pairs: the two objectives, combined (with conflict projection
    when enabled), clipped, applied. Returns the step's losses, gradient norm and batch SSIM."""
    content_index = torch.randint(len(train.content.images), (plan.batch_size,))
    style_index = torch.randint(len(train.style.images), (plan.batch_size,))
    content, style, content_latents, style_latents = train.batch(content_index, style_index, device)
    with _autocast(cfg.train.amp, device):
        terms = losses(student, content, style, content_latents, style_latents)
    style_loss = plan.style_weight * (terms["ad"] + cfg.distill.kl_weight * terms["kl"])
    content_loss = plan.content_weight * terms["content"]
    params = [p for p in student.parameters() if p.requires_grad]
    if projection is not None:
        projection.backward([style_loss, content_loss], params)
    else:
        (style_loss + content_loss).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": (style_loss + content_loss).item(), **{key: terms[key].item() for key in ("ad", "content", "kl")},
            "grad_norm": grad_norm.item(), "ssim": ssim(terms["image"].detach().float(), content)}


@torch.no_grad()
def validate(
    student: Student, losses: TeacherLosses, val: PairSet, cfg: StylizeConfig, feature: torch.nn.Module,
    device: torch.device,
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics on the fixed validation pairs (pair i = content i + style i) and the student's images.

    Timesteps and noise come from a generator seeded with `validation.seed`, so the same weights always
    get the same val_loss, and two runs are compared on identical draws.
    """
    student.eval()
    generator = torch.Generator().manual_seed(cfg.validation.seed)
    sums = {"ad": 0.0, "content": 0.0, "kl": 0.0}
    images = []
    count = len(val.content.images)
    for start in range(0, count, cfg.validation.batch_size):
        index = torch.arange(start, min(start + cfg.validation.batch_size, count))
        with _autocast(cfg.train.amp, device):
            terms = losses(student, *val.batch(index, index, device), generator=generator)
        for key in sums:
            sums[key] += float(terms[key]) * len(index)
        images.append(terms["image"].float().cpu())
    student.train()
    images = torch.cat(images)
    metrics = {key: value / count for key, value in sums.items()}
    metrics["val_loss"] = (metrics["ad"] + cfg.distill.kl_weight * metrics["kl"]
                           + cfg.validation.content_weight * metrics["content"])
    metrics["ssim"] = ssim(images, val.content.batch(slice(None)))
    metrics["fid"] = compute_fid(val.style.batch(slice(None)), images, feature)
    return metrics, images


def _fid_features(cfg: StylizeConfig, styles: LabelledBank, out: Path) -> torch.nn.Module:
    """The FID feature network: Inception, a given domain extractor, or one trained on the style labels."""
    v = cfg.validation
    if v.fid_features == "inception" or v.fid_features_path is not None:
        return load_feature_extractor(v.fid_features, v.fid_features_path)
    if v.fid_features != "domain":
        raise UserError(f"validation.fid_features={v.fid_features!r}: choose 'domain' or 'inception'")
    folder = out / "fid-domain"
    if (folder / "config.json").is_file():
        return DomainFeatures.load(folder)
    if len(set(styles.labels.tolist()) - {-1}) < 2:
        raise UserError("FID-domain needs labelled styles (textures, wikiart, dtd) to train its features; "
                        "set validation.fid_features_path or validation.fid_features=inception")
    log.info("training the FID-domain feature network on %d style images", len(styles.images))
    images = styles.batch(slice(None))
    items = [{"image": image, "label": int(label)} for image, label in zip(images, styles.labels)]
    model = train_domain_features(items, steps=v.fid_feature_steps, seed=v.seed, widths=v.fid_feature_widths,
                                  size=styles.images.shape[-1])
    model.save(folder)
    return model


def _fid_label(cfg: StylizeConfig) -> str:
    return "FID" if cfg.validation.fid_features == "inception" else "FID-domain"


def _sample_grid(val: PairSet, images: torch.Tensor, count: int):
    """Three rows: content, style, the student's image, for the first `count` validation pairs."""
    n = min(count, len(images))
    index = torch.arange(n)
    tiles = torch.cat([val.content.batch(index), val.style.batch(index), images[:n]])
    return image_grid(tiles, ["content"] * n + ["style"] * n + ["student"] * n, ncols=n)


@contextlib.contextmanager
def _ema_weights(ema: EMAModel, student: Student):
    """Run the block with the EMA weights in the student, then put the training weights back."""
    ema.store(student.parameters())
    ema.copy_to(student.parameters())
    try:
        yield
    finally:
        ema.restore(student.parameters())


def _autocast(amp: str, device: torch.device):
    if amp not in ("auto", "bf16", "none"):
        raise UserError(f"train.amp={amp!r}: choose auto, bf16 or none")
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class _CsvLogs:
    """log.csv (one row per step) and val.csv (one per validation), appended across resumes."""

    def __init__(self, out: Path, fresh: bool):
        self.files = [(out / name).open("w" if fresh else "a", newline="") for name in ("log.csv", "val.csv")]
        self.train = csv.DictWriter(self.files[0], LOG_FIELDS)
        self.val = csv.writer(self.files[1])
        if fresh:
            self.train.writeheader()
            self.val.writerow(VAL_FIELDS)

    def writerow_train(self, row: dict) -> None:
        self.train.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
        self.files[0].flush()  # so `tail -f log.csv` follows the run

    def writerow_val(self, row: list) -> None:
        self.val.writerow(row)
        self.files[1].flush()

    def close(self) -> None:
        for f in self.files:
            f.close()
