"""Recipe: train the built-in tiny teacher LDM on procedural data, on a laptop CPU, in minutes.

Reads top to bottom: build an in-memory image bank → phase 1 trains the autoencoder on random crops
(it is fully convolutional, so 32 px crops teach it the 48 px images at (32/48)² ≈ 0.44 of the cost) → encode the
bank once → phase 2 trains the UNet and text encoder on those latents with SD-1.5's noise schedule and
caption dropout (for classifier-free guidance), keeping an EMA of the UNet → save a diffusers SD folder.

Resumable: a checkpoint (weights, optimizer, EMA, RNG, step) is written every `checkpoint_every` steps
and when Ctrl-C or SIGTERM stops the run (at the end of the step it lands in); running the same command
again continues from it, bit-identically. A step with a non-finite loss or gradient is skipped;
`max_nonfinite_steps` of them in a row stop the run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel, compute_snr

from muon_ad import DEFAULT_GUIDANCE_SCALE
from muon_ad.checks import fields_within, writable_output
from muon_ad.config import check_config, save_config
from muon_ad.data.bank import ImageBank
from muon_ad.data.images import save_image_atomic
from muon_ad.data.procedural import (
    PALETTES,
    TEXTURE_FAMILIES,
    ProceduralPhotos,
    ProceduralScenes,
    ProceduralTextures,
    texture_caption,
)
from muon_ad.errors import UserError
from muon_ad.models.teacher import Teacher, TinyTeacherConfig, build_tiny_teacher, noise_scheduler, save_teacher
from muon_ad.training import (
    MetricLogger,
    GracefulStop,
    NonFiniteGuard,
    all_finite,
    progress_bar,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from muon_ad.visual import image_grid

log = logging.getLogger("muon_ad.train_teacher")


@dataclass
class TeacherDataConfig:
    textures: int = 4000
    scenes: int = 1000
    photos: int = 1000  # photo-like colour fields (grey, muted, natural colour): what keeps greys grey
    size: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        fields_within("data", self, ("textures", "scenes", "photos"), 0)
        fields_within("data", self, ("size",), 8, 1024)
        if self.textures + self.scenes + self.photos == 0:
            raise UserError("data.textures + data.scenes + data.photos must be at least 1")


@dataclass
class TeacherTrainConfig:
    out_dir: str = "runs/teacher-tiny"
    vae_steps: int = 2000
    unet_steps: int = 4800
    batch_size: int = 16
    vae_crop: int = 32
    vae_lr: float = 1e-3
    unet_lr: float = 1e-3
    min_snr_gamma: float = 5.0  # Min-SNR loss weighting (Hang et al. 2023): faster convergence; 0 turns it off
    warmup_steps: int = 100
    kl_weight: float = 1e-6
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    seed: int = 0
    sample_steps: int = 30
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    max_nonfinite_steps: int = 5  # steps in a row with a NaN/inf loss or gradient (each skipped) that stop the run

    def __post_init__(self) -> None:
        fields_within("train", self, ("vae_steps", "unet_steps", "warmup_steps", "min_snr_gamma", "kl_weight"), 0)
        fields_within("train", self, ("batch_size", "vae_crop", "checkpoint_every", "sample_steps",
                                      "max_nonfinite_steps"), 1)
        fields_within("train", self, ("vae_lr", "unet_lr"), 0, above=True)
        fields_within("train", self, ("caption_dropout", "ema_decay"), 0, 1)
        fields_within("train", self, ("guidance_scale",), 0)


@dataclass
class TrainTeacherConfig:
    model: TinyTeacherConfig = field(default_factory=TinyTeacherConfig)
    data: TeacherDataConfig = field(default_factory=TeacherDataConfig)
    train: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)

    def __post_init__(self) -> None:
        if self.data.size != self.model.image_size:
            raise UserError(f"data.size ({self.data.size}) must equal model.image_size ({self.model.image_size})")
        if self.train.vae_crop > self.data.size:
            raise UserError(f"train.vae_crop ({self.train.vae_crop}) must be at most data.size ({self.data.size})")


def build_bank(cfg: TeacherDataConfig) -> ImageBank:
    sets = [ProceduralTextures(cfg.textures, cfg.size, cfg.seed), ProceduralScenes(cfg.scenes, cfg.size, cfg.seed),
            ProceduralPhotos(cfg.photos, cfg.size, cfg.seed)]
    items = [d[i] for d in sets for i in progress_bar(desc="making built-in images", iterable=range(len(d)), leave=False)]
    images = torch.stack([((it["image"] + 1) * 127.5).round().to(torch.uint8) for it in items])
    return ImageBank(images, [it["caption"] for it in items])


def train_teacher(cfg: TrainTeacherConfig, on_step: Callable[[int], None] | None = None) -> Path:
    """Run (or resume) the recipe; returns the folder of the finished diffusers-format teacher."""
    check_config(cfg)  # a config built in code may have been edited after construction
    writable_output("train.out_dir", cfg.train.out_dir)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    torch.manual_seed(cfg.train.seed)
    bank = build_bank(cfg.data)
    vocabulary = sorted({word for caption in bank.captions for word in caption.split()})
    teacher = build_tiny_teacher(cfg.model, vocabulary)
    models = {"vae": teacher.vae, "unet": teacher.unet, "text_encoder": teacher.text_encoder}
    ema = EMAModel(teacher.unet.parameters(), decay=cfg.train.ema_decay, use_ema_warmup=True, foreach=True)
    total = cfg.train.vae_steps + cfg.train.unet_steps

    state = resume_checkpoint(out, models, total)
    step = 0 if state is None else state["step"]
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, "a learning rate too high: train.vae_lr, train.unet_lr")
    if state is not None:
        # Whatever phase it was saved in: a checkpoint from the autoencoder's last step resumes the UNet phase.
        set_rng_state(state["rng"])
        guard.load_state_dict(state["guard"])

    logger = MetricLogger(out, {"log.csv": ["step", "phase", "loss", "lr", "seconds"]}, fresh=step == 0)
    bar = progress_bar(total, step, "train-teacher")
    start = time.time()
    with GracefulStop(closing=(bar, logger)) as stop:
        for phase, phase_steps in (("vae", range(cfg.train.vae_steps)), ("unet", range(cfg.train.vae_steps, total))):
            if step >= phase_steps.stop:
                continue
            run = _vae_phase if phase == "vae" else _unet_phase
            optimizer, step_fn = run(cfg, teacher, bank, ema, state)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(cfg.train.warmup_steps,
                                                                                   len(phase_steps)))
            if state is not None and state.get("phase") == phase:
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state["schedule"])
                if phase == "unet":
                    ema.load_state_dict(state["ema"])
            state = None

            def checkpoint() -> None:
                extra = {"ema": ema.state_dict()} if phase == "unet" else {}
                save_checkpoint(out, step, models, {"phase": phase, "optimizer": optimizer.state_dict(),
                                                     "schedule": schedule.state_dict(), "rng": rng_state(),
                                                     "guard": guard.state_dict(),
                                                     "scaling_factor": teacher.vae.config.scaling_factor, **extra})

            while step < phase_steps.stop:
                loss, finite = step_fn()
                schedule.step()
                step += 1
                guard.observe(step, finite)
                logger.log("log.csv", {"step": step, "phase": phase, "loss": loss, "lr": schedule.get_last_lr()[0],
                                       "seconds": time.time() - start}, step, scalars=("loss", "lr"),
                           tag=f"train/{phase}")
                bar.set_postfix(phase=phase, loss=f"{loss:.4f}")
                bar.update()
                if on_step is not None:
                    on_step(step)
                stop.at_boundary(step, step % cfg.train.checkpoint_every == 0 or step == phase_steps.stop,
                                 checkpoint)

    ema.copy_to(teacher.unet.parameters())
    final = save_teacher(teacher, out / "teacher")
    grid = sample_grid(teacher, cfg.train.sample_steps, cfg.train.guidance_scale, seed=cfg.train.seed)
    save_image_atomic(grid, out / "samples.png")
    log.info("teacher saved to %s, samples in %s", final, out / "samples.png")
    return final


def _vae_phase(cfg: TrainTeacherConfig, teacher: Teacher, bank: ImageBank, ema: EMAModel, state: dict | None):
    """Autoencoder: MSE reconstruction of random crops plus a tiny KL term (as in SD's VAE, minus the GAN)."""
    vae, crop = teacher.vae.train(), cfg.train.vae_crop
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.train.vae_lr, weight_decay=0.0, fused=True)

    def step() -> float:
        x = bank.batch(torch.randint(len(bank.images), (cfg.train.batch_size,)))
        top, left = torch.randint(x.shape[-1] - crop + 1, (2,)).tolist()
        x = x[..., top : top + crop, left : left + crop]
        x = torch.where(torch.rand(x.shape[0], 1, 1, 1) < 0.5, x, x.flip(-1))
        posterior = vae.encode(x).latent_dist
        loss = F.mse_loss(vae.decode(posterior.sample()).sample, x) + cfg.train.kl_weight * posterior.kl().mean()
        loss.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in vae.parameters() if p.grad is not None])
        finite = all_finite(loss.item(), norm.item())
        if finite:  # a non-finite step is skipped (and counted by the recipe's guard)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item(), finite

    return optimizer, step


def _unet_phase(cfg: TrainTeacherConfig, teacher: Teacher, bank: ImageBank, ema: EMAModel, state: dict | None):
    """Denoiser: SD-1.5's epsilon objective, Min-SNR weighted, on latents of the (now frozen) autoencoder."""
    vae = teacher.vae.eval().requires_grad_(False)
    if state is not None and state.get("phase") == "unet":
        vae.register_to_config(scaling_factor=state["scaling_factor"])
    mean, std = teacher.encode_posterior(bank.batch(slice(None)), batch_size=128)
    if state is None or state.get("phase") != "unet":
        # SD's trick: scale latents to unit variance so the noise schedule means the same thing.
        vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
    scale = vae.config.scaling_factor
    unet, text_encoder = teacher.unet.train(), teacher.text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    # fused: one kernel for all ~300 small tensors; 4 ms instead of 19 ms a step on 2 CPU cores.
    optimizer = torch.optim.AdamW(params, lr=cfg.train.unet_lr, weight_decay=0.01, fused=True)
    noise = noise_scheduler(teacher)

    def step() -> float:
        index = torch.randint(len(bank.images), (cfg.train.batch_size,))
        latents = (mean[index] + std[index] * torch.randn_like(mean[index])) * scale
        latents = torch.where(torch.rand(latents.shape[0], 1, 1, 1) < 0.5, latents, latents.flip(-1))
        drop = torch.rand(len(index)) < cfg.train.caption_dropout
        prompts = ["" if d else bank.captions[i] for d, i in zip(drop.tolist(), index.tolist())]
        eps = torch.randn_like(latents)
        t = torch.randint(noise.config.num_train_timesteps, (len(index),))
        pred = unet(noise.add_noise(latents, eps, t), t, teacher.encode_prompts(prompts)).sample
        loss = F.mse_loss(pred, eps, reduction="none").mean(dim=(1, 2, 3))
        if cfg.train.min_snr_gamma > 0:
            snr = compute_snr(noise, t)
            loss = loss * snr.clamp(max=cfg.train.min_snr_gamma) / snr
        loss = loss.mean()
        loss.backward()
        finite = all_finite(loss.item(), torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True).item())
        if finite:  # a non-finite step is skipped (and counted by the recipe's guard)
            optimizer.step()
            ema.step(unet.parameters())
        optimizer.zero_grad(set_to_none=True)
        return loss.item(), finite

    return optimizer, step


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


@torch.no_grad()
def sample_grid(teacher: Teacher, steps: int, guidance_scale: float, seed: int = 0):
    """One sample per texture family (two palettes each), labelled with its prompt: the sanity picture."""
    palettes = list(PALETTES)
    prompts = [texture_caption(f, palettes[(i * 3 + k) % len(palettes)]) for i, f in enumerate(TEXTURE_FAMILIES) for k in range(2)]
    images = teacher.sample(prompts, steps, guidance_scale, seed)
    return image_grid(images, prompts, ncols=8, scale=2)
