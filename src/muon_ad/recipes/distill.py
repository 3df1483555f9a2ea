"""Recipe: distil the real-time stylisation student from the frozen teacher (`muon-ad distill CONFIG`).

Reads top to bottom: load the teacher → content and style banks, and their latents (once) → the banks of
the teacher's AD stylisations of training and validation pairs (`distill.targets`, when target_weight > 0,
made once and cached) → student, EMA, optimizer (Muon through `build_optimizer`), conflict projection,
curriculum → resume from the last checkpoint if there is one → each step: the curriculum's plan (phase, lr,
weights, frozen parts, hooks), a batch of pairs (of the target bank when there is one), the
`DistillObjective` (its two weighted objectives: style_weight·(L_AD + kl_weight·L_KL) + target_weight·L1 to
the AD targets, and λ·L_content; with style and content weights 0, as in the CPU preset, no teacher pass),
combined with conflict projection,
gradient clipping, optimizer step, EMA → periodic validation with the EMA weights on a fixed set (the
same objective at fixed weights, SSIM to the content, FID-domain to the styles, a sample grid) and
checkpoints → save the EMA student (`save_student`). Checkpoints, logging, EMA and autocast come from
`muon_ad.training`.

Baseline (the paper's comparison): the same recipe with AdamW everywhere and no conflict projection,
`muon-ad distill CONFIG --baseline` (= optimizer.name=adamw distill.conflict_projection=false, writing to
OUT_DIR-adamw).

Several processes (`torchrun --nproc-per-node N -m muon_ad distill CONFIG`, or `accelerate launch`): DDP through
`training.distributed` (section `distributed:` of the config), each rank taking an equal slice of every batch, rank 0
alone writing; the README's "Scaling out".

Logs: log.csv (every step), val.csv (every validation), TensorBoard events in tensorboard/, sample
grids in samples/. Ctrl-C (or SIGTERM) saves a checkpoint at the end of the step it lands in; running the
same command again resumes the run bit-identically. A step with a non-finite loss or gradient is skipped,
`max_nonfinite_steps` in a row stop the run.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel

from muon_ad import DEFAULT_DISTILL_DIR, DEFAULT_TEACHER, checks
from muon_ad.compress.hook import PruningHook
from muon_ad.compress.qat import QatHook
from muon_ad.config import check_config, save_config
from muon_ad.data.images import save_image_atomic
from muon_ad.distill import (
    Curriculum,
    CurriculumConfig,
    DistillDataConfig,
    DistillLossConfig,
    DistillObjective,
    PairSet,
    StepHook,
    StepPlan,
    build_banks,
    check_hooks,
)
from muon_ad.distill.data import window_bank
from muon_ad.distill.targets import TargetBank, build_target_bank, pairs_by_part
from muon_ad.errors import UserError
from muon_ad.io import folder_fingerprint
from muon_ad.eval import compute_fid, ssim
from muon_ad.eval.fid import style_feature_network
from muon_ad.models.student import Student, StudentConfig, save_student
from muon_ad.models.teacher import load_teacher
from muon_ad.optim import ConflictProjection, OptimizerConfig, build_optimizer
from muon_ad.training import (
    AMP_CHOICES,
    GracefulStop,
    MetricLogger,
    NonFiniteGuard,
    all_finite,
    autocast,
    distributed,
    ema_weights,
    is_main_process,
    progress_bar,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from muon_ad.training.distributed import DistributedConfig
from muon_ad.visual import image_grid

log = logging.getLogger("muon_ad.distill")


@dataclass
class ValidationConfig:
    every: int = 200  # steps between validations (the first and the last step are always validated)
    # val_loss = style_weight·(L_AD + kl_weight·L_KL) + content_weight·L_content + target_weight·L_target, fixed across
    # runs. Both 0 (a run trained on AD targets): the held-out L1 to the teacher's stylisation, no teacher pass.
    style_weight: float = 0.0
    content_weight: float = 0.0
    batch_size: int = 16
    fid_features: str = "domain"  # "domain" (FID-domain, a CNN trained on the style labels) or "inception"
    fid_features_path: str | None = None  # None with "domain": train one on the style bank, cache it in out_dir
    fid_feature_steps: int = 200
    fid_feature_widths: tuple[int, ...] = (16, 32, 64, 128)  # small: it only has to tell style classes apart
    grid: int = 8  # validation pairs shown in the sample grid
    seed: int = 0  # fixes the validation timesteps and noise

    def __post_init__(self) -> None:
        checks.fields_within("validation", self, ("every", "batch_size", "fid_feature_steps", "grid"), 1)
        checks.fields_within("validation", self, ("style_weight", "content_weight"), 0)
        checks.one_of("validation.fid_features", self.fid_features, ("domain", "inception"))


@dataclass
class DistillTrainConfig:
    out_dir: str = DEFAULT_DISTILL_DIR
    teacher: str = DEFAULT_TEACHER
    device: str = "cpu"
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, none on CPU (slower there); or "bf16" / "none"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    seed: int = 0
    max_nonfinite_steps: int = 5  # steps in a row with a NaN/inf loss or gradient (each skipped) that stop the run
    prune_criterion: str = "entropy"  # when a phase's keep_rate < 1: "entropy" (heads) + sensitivity, or "magnitude"

    def __post_init__(self) -> None:
        checks.one_of("train.device", self.device.partition(":")[0], ("cpu", "cuda"))  # whether it is here: at run time
        checks.one_of("train.amp", self.amp, AMP_CHOICES)
        checks.one_of("train.prune_criterion", self.prune_criterion, ("entropy", "magnitude"))
        checks.fields_within("train", self, ("grad_clip",), 0, above=True)
        checks.fields_within("train", self, ("ema_decay",), 0, 1)
        checks.fields_within("train", self, ("checkpoint_every", "max_nonfinite_steps"), 1)


def matched_optimizer_defaults() -> OptimizerConfig:
    """Muon's lr matched to AdamW's, so a recipe's lrs mean the same update size for both (distill, distill_t2i)."""
    return OptimizerConfig(adjust_lr="match_rms_adamw", lr=1e-3, weight_decay=0.01, adamw_lr=1e-3)


@dataclass
class DistillConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    optimizer: OptimizerConfig = field(default_factory=matched_optimizer_defaults)
    distill: DistillLossConfig = field(default_factory=DistillLossConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: DistillTrainConfig = field(default_factory=DistillTrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


def as_baseline(cfg: DistillConfig) -> DistillConfig:
    """The paper's baseline: the same recipe with AdamW everywhere and no conflict projection."""
    baseline = copy.deepcopy(cfg)
    baseline.optimizer.name = "adamw"
    baseline.distill.conflict_projection = False
    baseline.train.out_dir = f"{cfg.train.out_dir.rstrip('/')}-adamw"
    return baseline


LOG_FIELDS = ["step", "phase", "lr", "batch_size", "loss", "ad", "content", "kl", "target", "texture",
              "structure", "style_weight", "content_weight", "ssim", "grad_norm", "conflict_acted", "seconds"]
VAL_FIELDS = ["step", "val_loss", "ad", "content", "kl", "target", "texture", "structure", "ssim", "fid"]


def distill(cfg: DistillConfig, hooks: Sequence[StepHook] = (), init: Student | None = None) -> Path:
    """Run (or resume) the recipe; returns the folder of the saved (EMA) student.

    `hooks` run before every step with the step's plan, the student and the optimizer: the plug-in point
    for pruning (plan.keep_rate) and quantisation-aware training (plan.qat); a curriculum that asks for
    either with no hook to do it is refused before anything loads. A curriculum with keep_rate < 1 and no pruning
    hook among `hooks` gets `compress.PruningHook` (train.prune_criterion): masks during training, and the saved
    student is the compacted one. `init`: train this student (e.g. a compacted one, for a recovery fine-tune)
    instead of a fresh `Student(cfg.student)`; its config replaces cfg.student.
    """
    if init is not None:
        cfg.student = init.config
    check_config(cfg)  # a config built in code may have been edited after construction: fail before the slow loading
    checks.device("train.device", cfg.train.device)
    checks.writable_output("train.out_dir", cfg.train.out_dir)
    hooks = list(hooks)
    pruning = None
    if any(min(p.keep_rate) < 1 for _, p in cfg.curriculum.phases()) and not any(h.prunes for h in hooks):
        pruning = PruningHook(cfg.train.prune_criterion)
        hooks.append(pruning)
    if any(phase.qat for _, phase in cfg.curriculum.phases()) and not any(hook.quantises for hook in hooks):
        hooks.append(QatHook())  # `qat: true` in a config is performed by torchao's PT2E QAT (compress.qat)
    check_hooks(cfg.curriculum, hooks)
    _check_objective(cfg)
    curriculum = Curriculum(cfg.curriculum)
    device = torch.device(distributed.setup(cfg.train.device, cfg.distributed.timeout_s))  # no-op on one process
    _check_distributed(cfg)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        save_config(cfg, out / "config.yaml")
    teacher = load_teacher(cfg.train.teacher, device)
    content, style = build_banks(cfg.data, teacher.image_size)
    torch.manual_seed(cfg.train.seed)  # the student's init and then every draw of the run (pairs, t, noise)
    student = (Student(cfg.student) if init is None else init.train()).to(device)
    objective = DistillObjective(teacher, student, cfg.distill)
    (train_content, val_content), (train_style, val_style) = (b.split(cfg.data.val_pairs) for b in (content, style))
    train = PairSet.encode(train_content, train_style, objective.encode, device)
    val = PairSet.encode(val_content, val_style, objective.encode, device)
    targets = val_targets = None
    if cfg.distill.target_weight > 0:
        d = cfg.distill
        parts = [train]
        for scale in d.target_scales:  # teacher-size windows of the training pictures shown larger
            banks = (bank.split(cfg.data.val_pairs)[0] for bank in build_banks(cfg.data, scale))
            windows = [window_bank(bank, teacher.image_size, cfg.data.seed + k) for k, bank in enumerate(banks)]
            parts.append(PairSet.encode(*windows, objective.encode, device))
        train = PairSet.concat(parts)
        path = Path(d.target_path) if d.target_path else out / "ad-targets.safetensors"
        # The teacher by its bytes: a run and its teacher copied elsewhere reuse the bank; a retrained teacher does not.
        made_from = {"teacher_sha256": folder_fingerprint(cfg.train.teacher), "data": asdict(cfg.data),
                     **({"target_scales": list(d.target_scales)} if d.target_scales else {})}
        with distributed.main_process_first():  # rank 0 makes (or finds) the cached banks, the others read them
            targets = build_target_bank(teacher, train, *pairs_by_part(parts, d.target_pairs, cfg.data.seed),
                                        d.target_steps, d.target_lr, path, made_from)
            aligned = torch.arange(len(val.content.images))  # validation pair i = content i + style i
            val_targets = build_target_bank(teacher, val, aligned, aligned, d.target_steps, d.target_lr,
                                            path.with_name(f"{path.stem}-val{path.suffix}"), made_from)
    if pruning is not None:
        pruning.batches = lambda: _scoring_batches(train, targets, device, cfg.train.seed)
    v = cfg.validation
    feature = style_feature_network(v.fid_features, v.fid_features_path, train_style.batch(slice(None)),
                                    train_style.labels, out / "fid-domain", v.fid_feature_steps, v.fid_feature_widths,
                                    v.seed) if is_main_process() else None  # only rank 0 validates

    optimizer = build_optimizer(student, cfg.optimizer)  # ZeRO-1 (ShardedMuon) on several processes with zero1
    freezes = any(phase.freeze_style_encoder for _, phase in cfg.curriculum.phases())
    model = distributed.wrap(student, cfg.distributed, find_unused_parameters=freezes)  # DDP on several processes
    projection = (ConflictProjection(cfg.distill.conflict_threshold, cfg.distill.conflict_rate)
                  if cfg.distill.conflict_projection else None)
    ema = EMAModel(student.parameters(), decay=cfg.train.ema_decay, use_ema_warmup=True)
    total = cfg.curriculum.total_steps

    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, "a learning rate too high: curriculum.*.lr")
    state = resume_checkpoint(out, {"student": student}, total)
    step = 0 if state is None else state["step"]
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        curriculum.load_state_dict(state["curriculum"])
        guard.load_state_dict(state["guard"])
        if projection is not None:
            projection.checked, projection.acted = state["conflicts"]
        set_rng_state(state["rng"])

    def checkpoint() -> None:
        conflicts = [projection.checked, projection.acted] if projection is not None else [0, 0]
        optimizer_state = optimizer.state_dict()  # collective with ZeRO-1: every rank's share, gathered
        if is_main_process():
            save_checkpoint(out, step, {"student": student}, {
                "optimizer": optimizer_state, "ema": ema.state_dict(), "curriculum": curriculum.state_dict(),
                "conflicts": conflicts, "guard": guard.state_dict(), "rng": rng_state()})

    def validation() -> None:
        if not is_main_process():
            return
        with ema_weights(ema, student):
            for hook in hooks:  # the EMA's masked entries decay but are not zero: validate the masked student
                if hasattr(hook, "mask"):
                    hook.mask(student)
            metrics, images = validate(student, objective, val, val_targets, v, cfg.train.amp, feature, device)
        logger.log("val.csv", {"step": step, **metrics}, step, scalars=VAL_FIELDS[1:])
        grid = _sample_grid(val, images, v.grid)
        save_image_atomic(grid, out / "samples" / f"step-{step:07d}.png")
        save_image_atomic(grid, out / "samples.png")
        log.info("step %d: val_loss %.4f, SSIM %.3f, %s %.2f", step, metrics["val_loss"], metrics["ssim"],
                 "FID" if v.fid_features == "inception" else "FID-domain", metrics["fid"])

    logger = MetricLogger(out, {"log.csv": LOG_FIELDS, "val.csv": VAL_FIELDS}, fresh=step == 0)
    bar = progress_bar(total, step, "distill")
    start = time.time()
    with GracefulStop(closing=(bar, logger)) as stop:
        if step == 0:
            validation()  # the starting point of the curves
        while step < total:
            plan = curriculum.plan(step)
            if plan.phase_started:
                log.info("step %d: phase %d (%s): lr %g, batch %d, style %g, content %g%s", step, plan.phase,
                         plan.name, cfg.curriculum.phases()[plan.phase - 1][1].lr, plan.batch_size,
                         plan.style_weight, plan.content_weight,
                         ", style encoder frozen" if plan.freeze_style_encoder else "")
                logger.text("curriculum", f"step {step}: phase {plan.phase} ({plan.name})", step)
            student.style_encoder.requires_grad_(not plan.freeze_style_encoder)
            for group in optimizer.param_groups:
                group["lr"] = plan.lr
            for hook in hooks:
                hook(plan, student, optimizer)

            result = train_step(plan, model, objective, optimizer, projection, train, targets, cfg.train, device)
            finite = result.pop("finite")
            result = distributed.mean_over_ranks(result)  # the global batch's figures, the same on every rank
            if finite:  # a skipped step leaves the weights, so their average and the curriculum's view, alone
                ema.step(student.parameters())
                curriculum.observe(plan, result["ssim"])
            step += 1
            guard.observe(step, finite)

            row = {"step": step, "phase": plan.phase, "lr": plan.lr, "batch_size": plan.batch_size, **result,
                   "style_weight": plan.style_weight, "content_weight": plan.content_weight,
                   "conflict_acted": projection.acted if projection is not None else 0,
                   "seconds": time.time() - start}
            logger.log("log.csv", row, step, tag="train",
                       scalars=("loss", "ad", "content", "kl", "target", "texture", "structure", "content_weight", "ssim",
                                "grad_norm", "lr"))
            bar.set_postfix(phase=plan.phase, loss=f"{result['loss']:.4f}", ssim=f"{result['ssim']:.3f}")
            bar.update()
            if step % v.every == 0 or step == total:
                validation()
            stop.at_boundary(step, step % cfg.train.checkpoint_every == 0 or step == total, checkpoint)

    ema.copy_to(student.parameters())
    for hook in hooks:
        if hasattr(hook, "finish"):  # pruning: the masked channels are removed from the saved student
            student = hook.finish(student)
    folder = out / "student"
    if is_main_process():
        folder = save_student(student, folder)
    distributed.barrier()  # the student is on disk before any rank returns
    log.info("student saved to %s, samples in %s", folder, out / "samples.png")
    return folder


def _scoring_batches(train: PairSet, targets: TargetBank | None, device: torch.device, seed: int,
                     count: int = 4, size: int = 8) -> list[tuple[torch.Tensor, ...]]:
    """Fixed batches the pruning hook scores heads and channels on: (content, style, AD target) of target-bank pairs
    when there is a bank, else random training pairs; from their own generator (the run's RNG stream is untouched)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        if targets is not None:
            pick = torch.randint(len(targets), (size,), generator=generator)
            content, style, *_ = train.batch(targets.content_index[pick], targets.style_index[pick], device)
            batches.append((content, style, targets.targets(pick, device)))
        else:
            content, style, *_ = train.batch(torch.randint(len(train.content.images), (size,), generator=generator),
                                             torch.randint(len(train.style.images), (size,), generator=generator), device)
            batches.append((content, style))
    return batches


def _check_objective(cfg: DistillConfig) -> None:
    """Without AD targets, a phase or the validation weighting everything 0 would train or measure nothing."""
    if cfg.distill.target_weight > 0:
        return
    empty = [f"curriculum.{name}" for name, p in cfg.curriculum.phases()
             if p.steps and p.style_weight == 0 and p.content_weight == 0]
    if cfg.validation.style_weight == 0 and cfg.validation.content_weight == 0:
        empty.append("validation")
    if empty:
        raise UserError(f"{', '.join(empty)}: style_weight and content_weight are both 0 and distill.target_weight "
                        "is 0, so there is nothing to train or measure; set the weights, or use AD targets")


def _check_distributed(cfg: DistillConfig) -> None:
    """On several processes: every batch splits into equal slices; gradient compression and conflict projection on
    the teacher's terms (the steps with two gradients to project) do not mix."""
    distributed.check_shards([(f"curriculum.{name}.batch_size", p.batch_size) for name, p in cfg.curriculum.phases()
                              if p.steps])
    distributed.check_compression(cfg.distributed,
                                  cfg.distill.conflict_projection and cfg.curriculum.uses_teacher_terms())


def train_step(
    plan: StepPlan, student: Student, objective: DistillObjective, optimizer: torch.optim.Optimizer,
    projection: ConflictProjection | None, train: PairSet, targets: TargetBank | None, cfg: DistillTrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """One optimizer step on a random batch of pairs (pairs of the AD-target bank when there is one): the two
    objectives, combined (with conflict projection when enabled and both have gradients), clipped, applied unless
    non-finite. Returns the step's losses, gradient norm, batch SSIM and whether it was applied ("finite")."""
    style_weight, content_weight = plan.style_weight, plan.content_weight
    if targets is not None:
        pick = distributed.shard(torch.randint(len(targets), (plan.batch_size,)))  # this rank's slice
        content_index, style_index = targets.content_index[pick], targets.style_index[pick]
        target = targets.targets(pick, device)
    else:
        content_index = distributed.shard(torch.randint(len(train.content.images), (plan.batch_size,)))
        style_index = distributed.shard(torch.randint(len(train.style.images), (plan.batch_size,)))
        target = None
    content, *rest = train.batch(content_index, style_index, device)
    # Projection needs each objective's own gradient, which exists once the teacher's content term or L_structure is
    # on; on several processes DDP then stays out of the backward and each objective's gradient is averaged over the
    # ranks by hand.
    separate = projection is not None and (style_weight != 0 or content_weight != 0
                                           or objective.cfg.structure_weight != 0)
    with distributed.no_sync(student) if separate else contextlib.nullcontext(), autocast(cfg.amp, device):
        terms = objective(student, content, *rest, style_weight=style_weight, content_weight=content_weight,
                          targets=target, shard=(distributed.rank(), distributed.world_size()))
    params = [p for p in student.parameters() if p.requires_grad]
    if separate:
        projection.backward([terms.style_objective, terms.content_objective], params,
                            reduce=distributed.average_gradients)
    else:
        terms.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    finite = all_finite(terms.loss.item(), grad_norm.item())
    if finite:  # else the step is skipped; the recipe's guard counts it
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": terms.loss.item(), "ad": terms.ad.item(), "content": terms.content.item(), "kl": terms.kl.item(),
            "target": terms.target.item(), "texture": terms.texture.item(), "structure": terms.structure.item(),
            "grad_norm": grad_norm.item(),
            "ssim": ssim(terms.image.detach().float(), content), "finite": finite}


@torch.no_grad()
def validate(
    student: Student, objective: DistillObjective, val: PairSet, val_targets: TargetBank | None, cfg: ValidationConfig,
    amp: str, feature: torch.nn.Module, device: torch.device,
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics on the fixed validation pairs (pair i = content i + style i) and the student's images.

    The objective at fixed weights (`cfg.style_weight`, `cfg.content_weight`, and L_target against the validation
    pairs' own AD targets when the run has targets) is the validation loss. Timesteps and noise come from a
    generator seeded with `cfg.seed`, so the same weights always get the same val_loss, and two runs are
    compared on identical draws.
    """
    student.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    sums = {"val_loss": 0.0, "ad": 0.0, "content": 0.0, "kl": 0.0, "target": 0.0, "texture": 0.0, "structure": 0.0}
    images = []
    count = len(val.content.images)
    for start in range(0, count, cfg.batch_size):
        index = torch.arange(start, min(start + cfg.batch_size, count))
        targets = val_targets.targets(index, device) if val_targets is not None else None
        with autocast(amp, device):
            terms = objective(student, *val.batch(index, index, device), style_weight=cfg.style_weight,
                              content_weight=cfg.content_weight, generator=generator, targets=targets)
        for key, value in (("val_loss", terms.loss), ("ad", terms.ad), ("content", terms.content), ("kl", terms.kl),
                           ("target", terms.target), ("texture", terms.texture), ("structure", terms.structure)):
            sums[key] += float(value) * len(index)
        images.append(terms.image.float().cpu())
    student.train()
    images = torch.cat(images)
    metrics = {key: value / count for key, value in sums.items()}
    metrics["ssim"] = ssim(images, val.content.batch(slice(None)))
    metrics["fid"] = compute_fid(val.style.batch(slice(None)), images, feature)
    return metrics, images


def _sample_grid(val: PairSet, images: torch.Tensor, count: int):
    """Three rows: content, style, the student's image, for the first `count` validation pairs."""
    n = min(count, len(images))
    index = torch.arange(n)
    tiles = torch.cat([val.content.batch(index), val.style.batch(index), images[:n]])
    return image_grid(tiles, ["content"] * n + ["style"] * n + ["student"] * n, ncols=n)
