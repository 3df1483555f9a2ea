"""Recipe: the compressed, few-step text-to-image student (`muon-ad distill-t2i CONFIG`).

Reads top to bottom: load the frozen teacher → an image–caption bank (built-in procedural textures and scenes,
or a caption folder), encoded once into VAE posteriors; a held-out part for validation → the student UNet with
BK-SDM's blocks removed and the teacher's weights copied (`models.t2i_student`) → optimizer (Muon through
`build_optimizer`), conflict projection → resume from the last checkpoint if there is one → phase 1
(`schedule.compress_steps`): BK-SDM's task + output + normalised feature distillation + the attention KL
(`distill.t2i.CompressObjective`), the distillation and task objectives combined by conflict projection →
phase 2 (`schedule.consistency_steps`): latent consistency distillation of the sampler to a few steps
(`ConsistencyObjective`, a target network kept as an EMA of the student) → periodic validation on fixed draws
(the phase's objective) and checkpoints → save a full diffusers SD folder (the teacher's VAE, text encoder and
tokenizer, the student UNet, an LCMScheduler, and `sampling.json`: its steps, no guidance) and a grid of
teacher vs student samples for the same prompts and seeds.

Several processes (`torchrun --nproc-per-node N -m muon_ad distill-t2i CONFIG`, or `accelerate launch`): the
machinery of `distill` (`training.distributed`, section `distributed:`): DDP, each rank an equal slice of every global
batch, rank 0 alone validating and writing, and conflict projection on each objective's gradient averaged over the
ranks, so N processes train what one process of the same global batch trains.

Baseline: `--baseline` = AdamW everywhere and no conflict projection, in OUT_DIR-adamw (`recipes.distill.as_baseline`).
Logs: log.csv (every step), val.csv, TensorBoard in tensorboard/. Ctrl-C (or SIGTERM) saves at the end of the
step it lands in; the same command resumes. Non-finite steps are skipped; `max_nonfinite_steps` in a row stop it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from muon_ad import DEFAULT_TEACHER, checks
from muon_ad.config import check_config, save_config
from muon_ad.data.bank import ImageBank
from muon_ad.data.folders import ImageFolder
from muon_ad.data.images import save_image_atomic
from muon_ad.data.procedural import PALETTES, TEXTURE_FAMILIES, texture_caption
from muon_ad.distill.t2i import (
    CompressObjective,
    ConsistencyConfig,
    ConsistencyObjective,
    T2ILossConfig,
    few_step_scheduler,
    update_target,
)
from muon_ad.errors import UserError
from muon_ad.models.t2i_student import VARIANTS, build_student, parameter_count
from muon_ad.models.teacher import Teacher, load_teacher, save_teacher
from muon_ad.optim import ConflictProjection, OptimizerConfig, build_optimizer
from muon_ad.recipes.distill import matched_optimizer_defaults
from muon_ad.recipes.train_teacher import TeacherDataConfig, build_bank
from muon_ad.training import (
    AMP_CHOICES,
    distributed,
    GracefulStop,
    MetricLogger,
    NonFiniteGuard,
    all_finite,
    autocast,
    is_main_process,
    progress_bar,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from muon_ad.training.distributed import DistributedConfig
from muon_ad.visual import image_grid

log = logging.getLogger("muon_ad.distill_t2i")


@dataclass
class T2IStudentConfig:
    variant: str = "tiny"  # BK-SDM's base / small / tiny (models.t2i_student)

    def __post_init__(self) -> None:
        checks.one_of("student.variant", self.variant, VARIANTS)


@dataclass
class T2IDataConfig:
    source: str = "builtin"  # builtin (the teacher's procedural textures + scenes) | folder (images + captions)
    path: str | None = None  # folder: its root
    captions: str | None = None  # folder: JSONL or CSV of file → caption (data.folders.read_captions)
    count: int | None = None  # folder: at most this many images (the bank is held in memory: 0.75 MB each at 512 px)
    size: int = 48  # pixels; the teacher's image size
    textures: int = 4000  # builtin
    scenes: int = 1000  # builtin
    val_count: int = 64  # held out (the bank's last images) for validation
    seed: int = 0

    def __post_init__(self) -> None:
        checks.one_of("data.source", self.source, ("builtin", "folder"))
        checks.fields_within("data", self, ("textures", "scenes"), 0)
        checks.fields_within("data", self, ("size", "val_count"), 1)
        if self.count is not None:
            checks.fields_within("data", self, ("count",), 2)
        if self.source == "folder" and not self.path:
            raise UserError("data.source=folder needs data.path (and usually data.captions)")


@dataclass
class T2IScheduleConfig:
    compress_steps: int = 400  # phase 1: architectural distillation
    consistency_steps: int = 400  # phase 2: latent consistency distillation
    batch_size: int = 16
    compress_lr: float = 1e-3
    consistency_lr: float = 2e-4
    warmup_steps: int = 20  # linear warm-up at the start of each phase

    def __post_init__(self) -> None:
        checks.fields_within("schedule", self, ("compress_steps", "consistency_steps", "warmup_steps"), 0)
        checks.fields_within("schedule", self, ("batch_size",), 1)
        checks.fields_within("schedule", self, ("compress_lr", "consistency_lr"), 0, above=True)
        if self.compress_steps + self.consistency_steps == 0:
            raise UserError("schedule.compress_steps + schedule.consistency_steps must be at least 1")


@dataclass
class T2IValidationConfig:
    every: int = 100
    batch_size: int = 32
    seed: int = 0  # fixes validation timesteps and noise: runs are compared on identical draws
    grid_prompts: int = 12  # texture prompts of the teacher-vs-student grid (one per family)

    def __post_init__(self) -> None:
        checks.fields_within("validation", self, ("every", "batch_size", "grid_prompts"), 1)


@dataclass
class T2ITrainConfig:
    out_dir: str = "runs/t2i-tiny"
    teacher: str = DEFAULT_TEACHER
    device: str = "cpu"
    amp: str = "auto"
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0
    max_nonfinite_steps: int = 5

    def __post_init__(self) -> None:
        checks.one_of("train.device", self.device.partition(":")[0], ("cpu", "cuda"))
        checks.one_of("train.amp", self.amp, AMP_CHOICES)
        checks.fields_within("train", self, ("grad_clip",), 0, above=True)
        checks.fields_within("train", self, ("checkpoint_every", "max_nonfinite_steps"), 1)


@dataclass
class DistillT2IConfig:
    student: T2IStudentConfig = field(default_factory=T2IStudentConfig)
    optimizer: OptimizerConfig = field(default_factory=matched_optimizer_defaults)
    distill: T2ILossConfig = field(default_factory=T2ILossConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    schedule: T2IScheduleConfig = field(default_factory=T2IScheduleConfig)
    data: T2IDataConfig = field(default_factory=T2IDataConfig)
    validation: T2IValidationConfig = field(default_factory=T2IValidationConfig)
    train: T2ITrainConfig = field(default_factory=T2ITrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


LOG_FIELDS = ["step", "phase", "lr", "loss", "task", "output", "feature", "kl", "consistency", "grad_norm",
              "conflict_acted", "seconds"]
VAL_FIELDS = ["step", "phase", "val_loss", "task", "output", "feature", "kl", "consistency"]
TERMS = ("task", "output", "feature", "kl", "consistency")


@dataclass
class LatentBank:
    """VAE posteriors (unscaled mean, std) of a bank's images and their captions."""

    mean: torch.Tensor
    std: torch.Tensor
    captions: list[str]

    def split(self, count: int) -> tuple["LatentBank", "LatentBank"]:
        if count >= len(self.captions):
            raise UserError(f"data.val_count ({count}) must be below the bank's {len(self.captions)} images")
        cut = len(self.captions) - count
        return (LatentBank(self.mean[:cut], self.std[:cut], self.captions[:cut]),
                LatentBank(self.mean[cut:], self.std[cut:], self.captions[cut:]))


def image_caption_bank(cfg: T2IDataConfig) -> ImageBank:
    """The built-in textures and scenes (the teacher's own data), or an image–caption folder (LAION-style)."""
    if cfg.source == "builtin":
        return build_bank(TeacherDataConfig(textures=cfg.textures, scenes=cfg.scenes, size=cfg.size, seed=cfg.seed))
    folder = ImageFolder(cfg.path, cfg.size, cfg.captions)
    items = [folder[i] for i in range(len(folder) if cfg.count is None else min(cfg.count, len(folder)))]
    if not items:
        raise UserError(f"data.path {cfg.path}: no readable images")
    images = torch.stack([((it["image"] + 1) * 127.5).round().to(torch.uint8) for it in items])
    return ImageBank(images, [it["caption"] for it in items])


def encode_bank(teacher: Teacher, bank: ImageBank) -> LatentBank:
    mean, std = teacher.encode_posterior(bank.batch(slice(None)))
    return LatentBank(mean, std, bank.captions)


class Draws:
    """A batch's latents (posterior samples, scaled), text embeddings, timesteps and noise."""

    def __init__(self, teacher: Teacher, bank: LatentBank, index: torch.Tensor, dropout: float,
                 timesteps, generator: torch.Generator | None, device: torch.device):
        scale = teacher.vae.config.scaling_factor
        noise = torch.randn(bank.mean[index].shape, generator=generator)
        self.latents = ((bank.mean[index] + bank.std[index] * noise) * scale).to(device)
        drop = torch.rand(len(index), generator=generator) < dropout
        prompts = ["" if d else bank.captions[i] for d, i in zip(drop.tolist(), index.tolist())]
        with torch.no_grad():
            self.text = teacher.encode_prompts(prompts)
        self.t = timesteps(len(index), generator).to(device)
        self.eps = torch.randn(self.latents.shape, generator=generator).to(device)

    def shard(self) -> "Draws":
        """This rank's slice of the global batch (all of it on one process): every rank draws the whole batch from
        the same RNG, so their RNGs, and the checkpoints', stay equal."""
        for name in ("latents", "text", "t", "eps"):
            setattr(self, name, distributed.shard(getattr(self, name)))
        return self


def distill_t2i(cfg: DistillT2IConfig) -> Path:
    """Run (or resume) the recipe; returns the saved student folder (a diffusers SD folder)."""
    check_config(cfg)
    checks.device("train.device", cfg.train.device)
    checks.writable_output("train.out_dir", cfg.train.out_dir)
    out = Path(cfg.train.out_dir)
    device = torch.device(distributed.setup(cfg.train.device, cfg.distributed.timeout_s))  # no-op on one process
    _check_distributed(cfg)
    teacher = load_teacher(cfg.train.teacher, device)
    if cfg.data.size != teacher.image_size:
        raise UserError(f"data.size ({cfg.data.size}) must be the teacher's image size ({teacher.image_size})")
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        save_config(cfg, out / "config.yaml")
    train, val = encode_bank(teacher, image_caption_bank(cfg.data)).split(cfg.data.val_count)
    torch.manual_seed(cfg.train.seed)
    student, copied = build_student(teacher.unet, cfg.student.variant)
    student.train()
    log.info("student '%s': %d of %d tensors copied from the teacher, %.1f%% of its parameters", cfg.student.variant,
             copied.copied, copied.total, 100 * parameter_count(student) / parameter_count(teacher.unet))
    target = build_student(teacher.unet, cfg.student.variant)[0].requires_grad_(False)  # phase 2's EMA target
    target.load_state_dict(student.state_dict())
    compress = CompressObjective(teacher, student, cfg.distill)
    consistency = ConsistencyObjective(teacher, cfg.consistency)
    optimizer = build_optimizer(student, cfg.optimizer)  # ZeRO-1 (ShardedMuon) on several processes with zero1
    model = distributed.wrap(student, cfg.distributed)  # DDP on several processes
    d = cfg.distill
    projection = ConflictProjection(d.conflict_threshold, d.conflict_rate) if d.conflict_projection else None
    s = cfg.schedule
    total = s.compress_steps + s.consistency_steps
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, "a learning rate too high: schedule.*_lr")

    state = resume_checkpoint(out, {"student": student, "target": target}, total)
    step = 0 if state is None else state["step"]
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        guard.load_state_dict(state["guard"])
        if projection is not None:
            projection.checked, projection.acted = state["conflicts"]
        set_rng_state(state["rng"])

    def checkpoint() -> None:
        conflicts = [projection.checked, projection.acted] if projection is not None else [0, 0]
        optimizer_state = optimizer.state_dict()  # collective with ZeRO-1: every rank's share, gathered
        if is_main_process():
            save_checkpoint(out, step, {"student": student, "target": target}, {
                "optimizer": optimizer_state, "guard": guard.state_dict(), "conflicts": conflicts, "rng": rng_state()})

    def uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randint(teacher.scheduler.config.num_train_timesteps, (n,), generator=generator)

    def validation(phase: int) -> None:
        if not is_main_process():  # only rank 0 validates
            return
        metrics = validate(phase, student, target, teacher, compress, consistency, val, cfg, uniform, device)
        logger.log("val.csv", {"step": step, "phase": phase, **metrics}, step, scalars=VAL_FIELDS[2:])
        log.info("step %d (phase %d): val_loss %.4f", step, phase, metrics["val_loss"])

    logger = MetricLogger(out, {"log.csv": LOG_FIELDS, "val.csv": VAL_FIELDS}, fresh=step == 0)
    bar = progress_bar(total, step, "distill-t2i")
    start = time.time()
    with GracefulStop(closing=(bar, logger)) as stop:
        if step == 0:
            validation(1 if s.compress_steps else 2)
        while step < total:
            phase = 1 if step < s.compress_steps else 2
            if step == s.compress_steps:  # phase 2 starts: the target network starts as the student
                target.load_state_dict(student.state_dict())
                log.info("step %d: phase 2 (latent consistency distillation)", step)
            into = step if phase == 1 else step - s.compress_steps
            lr = (s.compress_lr if phase == 1 else s.consistency_lr) * min(1.0, (into + 1) / max(1, s.warmup_steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = torch.randint(len(train.captions), (s.batch_size,))
            separate = projection is not None and phase == 1  # two objectives, projected: each its own gradient
            if phase == 1:
                draws = Draws(teacher, train, index, d.caption_dropout, uniform, None, device).shard()
                with distributed.no_sync(model) if separate else contextlib.nullcontext(), \
                        autocast(cfg.train.amp, device):
                    terms = compress(model, draws.latents, draws.text, draws.t, draws.eps)
                result = {k: getattr(terms, k).item() for k in ("task", "output", "feature", "kl")}
                result["consistency"] = 0.0
                objectives = [terms.distill_objective, terms.task_objective]
            else:
                draws = Draws(teacher, train, index, 0.0, consistency.draw_timesteps, None, device).shard()
                with autocast(cfg.train.amp, device):
                    loss = consistency(model, target, draws.latents, draws.text, draws.t, draws.eps)
                result = {"task": 0.0, "output": 0.0, "feature": 0.0, "kl": 0.0, "consistency": loss.item()}
                objectives = [loss]
            finite, grad_norm, total_loss = _optimizer_step(objectives, student, optimizer,
                                                            projection if separate else None, cfg.train.grad_clip)
            # the global batch's figures, the same on every rank
            result = distributed.mean_over_ranks({**result, "loss": total_loss})
            total_loss = result.pop("loss")
            if finite and phase == 2:
                update_target(target, student, cfg.consistency.target_decay)
            step += 1
            guard.observe(step, finite)
            row = {"step": step, "phase": phase, "lr": lr, "loss": total_loss, **result, "grad_norm": grad_norm,
                   "conflict_acted": projection.acted if projection is not None else 0,
                   "seconds": time.time() - start}
            logger.log("log.csv", row, step, tag="train", scalars=("loss", *TERMS, "grad_norm", "lr"))
            bar.set_postfix(phase=phase, loss=f"{total_loss:.4f}")
            bar.update()
            if step % cfg.validation.every == 0 or step in (s.compress_steps, total):
                validation(phase)
            stop.at_boundary(step, step % cfg.train.checkpoint_every == 0 or step == total, checkpoint)

    folder = out / "student"
    if is_main_process():
        folder = save_student_pipeline(teacher, student, cfg.consistency, folder)
        save_image_atomic(comparison_grid(teacher, load_teacher(folder, device), cfg.validation.grid_prompts, seed=0),
                          out / "samples.png")
    distributed.barrier()  # the student is on disk before any rank returns
    log.info("student saved to %s; teacher vs student samples in %s", folder, out / "samples.png")
    return folder


def _check_distributed(cfg: DistillT2IConfig) -> None:
    """On several processes: the global batch splits into equal slices; gradient compression and conflict
    projection (phase 1's two objectives) do not mix."""
    distributed.check_shards([("schedule.batch_size", cfg.schedule.batch_size)])
    distributed.check_compression(cfg.distributed, cfg.distill.conflict_projection and cfg.schedule.compress_steps > 0)


def _optimizer_step(objectives: list[torch.Tensor], student: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    projection: ConflictProjection | None, grad_clip: float) -> tuple[bool, float, float]:
    """Backward (with `projection`: conflict projection between the objectives, each one's gradient averaged over
    the ranks first; the forward ran outside DDP's sync), clip, step unless non-finite."""
    params = [p for p in student.parameters() if p.requires_grad]
    loss = sum(objectives)
    if projection is not None:
        projection.backward(objectives, params, reduce=distributed.average_gradients)
    else:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    finite = all_finite(loss.item(), grad_norm.item())
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return finite, grad_norm.item(), loss.item()


@torch.no_grad()
def validate(phase: int, student, target, teacher: Teacher, compress: CompressObjective,
             consistency: ConsistencyObjective, val: LatentBank, cfg: DistillT2IConfig, uniform, device) -> dict:
    """The phase's objective on the held-out bank with draws seeded by `validation.seed` (identical across runs)."""
    student.eval()
    generator = torch.Generator().manual_seed(cfg.validation.seed)
    sums = dict.fromkeys(("val_loss", *TERMS), 0.0)
    count = len(val.captions)
    for first in range(0, count, cfg.validation.batch_size):
        index = torch.arange(first, min(first + cfg.validation.batch_size, count))
        with autocast(cfg.train.amp, device):
            if phase == 1:
                draws = Draws(teacher, val, index, 0.0, uniform, generator, device)
                terms = compress(student, draws.latents, draws.text, draws.t, draws.eps)
                values = {"val_loss": terms.loss, "task": terms.task, "output": terms.output,
                          "feature": terms.feature, "kl": terms.kl}
            else:
                draws = Draws(teacher, val, index, 0.0, consistency.draw_timesteps, generator, device)
                loss = consistency(student, target, draws.latents, draws.text, draws.t, draws.eps)
                values = {"val_loss": loss, "consistency": loss}
        for key, value in values.items():
            sums[key] += float(value) * len(index)
    student.train()
    return {key: value / count for key, value in sums.items()}


def save_student_pipeline(teacher: Teacher, student, cfg: ConsistencyConfig, path: Path) -> Path:
    """A full diffusers SD folder: the teacher's VAE, text encoder and tokenizer, the student UNet, the few-step
    LCMScheduler, and the folder's sampling defaults (its steps, guidance 1: the guidance is baked in)."""
    return save_teacher(Teacher(unet=student, vae=teacher.vae, text_encoder=teacher.text_encoder,
                                tokenizer=teacher.tokenizer, scheduler=few_step_scheduler(teacher, cfg),
                                sampling={"steps": cfg.sample_steps, "guidance_scale": 1.0}), path)


def grid_prompts(count: int) -> list[str]:
    """One texture prompt per family (palettes in rotation), the first `count`."""
    palettes = list(PALETTES)
    return [texture_caption(f, palettes[(3 * i) % len(palettes)]) for i, f in enumerate(TEXTURE_FAMILIES)][:count]


def comparison_grid(teacher: Teacher, student: Teacher, count: int, seed: int = 0):
    """Two rows: the teacher (its 30 DDIM steps, guidance) and the student (its few steps), same prompts and seed."""
    prompts = grid_prompts(count)
    images = torch.cat([teacher.sample(prompts, seed=seed), student.sample(prompts, seed=seed)])
    labels = [f"T: {p}" for p in prompts] + [f"S{student.default_steps}: {p}" for p in prompts]
    return image_grid(images, labels, ncols=len(prompts), scale=2)

