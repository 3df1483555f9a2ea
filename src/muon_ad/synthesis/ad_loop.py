"""Optimisation-based attention distillation: the AD objective on a latent, and the loop that lowers it.

Formulation (after the CVPR 2025 "Attention Distillation" optimisation mode, re-derived for any SD-layout
teacher). The variable is a *clean* latent z (the VAE latent of the image being made), initialised from
the content latent (style transfer) or from Gaussian noise (texture synthesis). A DDIM schedule of N
timesteps, high to low, is walked once, with one optimiser step per timestep t:

    style K, V   = teacher UNet(z_style, t, "") at the AD layers        (constant)
    content Q    = teacher UNet(z_content, t, "") at the AD layers      (constant, style transfer only)
    L(z, t)      = ad_loss(UNet(z, t, "")) + w * content_loss(UNet(z, t, ""))
    z           <- optimiser step on L(z, t)

and the result is decode(z). Every side enters the UNet clean: the timestep is not a noise level here but
a knob on *which* features the UNet extracts (high t: layout and large structures; low t: fine texture),
so walking t high to low is a coarse-to-fine curriculum. Noising only the references would compare a
clean query against noisy keys, and noising everything makes the loss random, so neither is done; with
clean inputs the loss at a fixed t is a deterministic function of z, which is what lets the
ad-convergence benchmark compare optimisers by it. (Guided sampling, `guided.py`, is the other mode:
there the latent *is* noisy, so the references are noised to the same timestep.)

Conditioning is the empty prompt. The AD layers default to the self-attention layers of the two
highest-resolution decoder levels: exactly the published "last 6 of 16" on SD-1.5, and the last 4 of 7 on
the built-in tiny teacher, whose decoder has only two levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from muon_ad.attention import AttentionCapture, ad_loss, content_loss, self_attention_layer_names
from muon_ad.attention.capture import LayerSpec
from muon_ad.attention.losses import Masks
from muon_ad.checks import within
from muon_ad.errors import UserError
from muon_ad.models.teacher import Teacher, noise_scheduler
from muon_ad.optim.latent import LatentMuon
from muon_ad.training import NonFiniteGuard, all_finite, progress_bar

OPTIMIZERS = ("adam", "muon")
# Adam: the published lr (SD-1.5 latents have unit scale, as the tiny teacher's do), also the best of the
# grid {0.01, 0.02, 0.05, 0.1} in the ad-convergence benchmark's tuning on held-out cases. Muon: the best of
# the same grid there. Layout: Muon on each sample's latent as one C x HW matrix ("channels") beat one
# H x W matrix per channel ("spatial") there: geometric-mean final loss 0.204 vs 0.238 at their best lrs.
DEFAULT_LR = {"adam": 0.05, "muon": 0.02}
MUON_LAYOUT = "channels"
NONFINITE_LIMIT = 5  # AD steps in a row with a non-finite loss (each skipped) that stop the synthesis
History = list[dict[str, float]]


def default_ad_layers(unet: torch.nn.Module) -> list[str]:
    """Self-attention layers of the two highest-resolution decoder levels (SD-1.5: its last 6 of 16)."""
    names = self_attention_layer_names(unet)
    up = [n for n in names if n.startswith("up_blocks.")]
    levels = list(dict.fromkeys(n.split(".")[1] for n in up))[-2:]
    return [n for n in up if n.split(".")[1] in levels] or names


def ddim_timesteps(teacher: Teacher, steps: int) -> Tensor:
    """The teacher's DDIM timesteps for `steps` steps, high to low (a private scheduler: the teacher's is untouched)."""
    total = teacher.scheduler.config.num_train_timesteps
    if not 1 <= steps <= total:
        raise UserError(f"steps={steps}: choose between 1 and {total} (the teacher's training timesteps)")
    scheduler = DDIMScheduler.from_config(teacher.scheduler.config)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps


def resolve_lr(name: str, lr: float | None = None, defaults: dict[str, float] = DEFAULT_LR) -> float:
    """Check the optimiser name; return `lr`, or its default when None."""
    if name not in OPTIMIZERS:
        raise UserError(f"optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")
    if lr is not None:
        within("lr", lr, 0, above=True)
    return defaults[name] if lr is None else lr


def make_latent_optimizer(name: str, latent: Tensor, lr: float | None = None) -> torch.optim.Optimizer:
    """Adam (the published AD optimiser) or the project's latent Muon over one latent tensor."""
    lr = resolve_lr(name, lr)
    if name == "adam":
        return torch.optim.Adam([latent], lr=lr)
    return LatentMuon([latent], lr=lr, layout=MUON_LAYOUT)


def _select(records: dict, i: int, keys: Sequence[str] | None = None) -> dict:
    """Sample i of batched attention records (batch axis kept), optionally only `keys`."""
    return {n: {k: v[i : i + 1] for k, v in r.items() if keys is None or k in keys} for n, r in records.items()}


class ADObjective:
    """The AD (+ content) loss of latents at timesteps, against constant reference features.

    A batch of latents is a batch of independent images: every loss is per sample, and each sample may
    sit at its own timestep, so one UNet pass can score many runs, or one latent at many timesteps.

    Args:
        teacher: frozen SD-layout teacher.
        style: reference latent (1, C, h, w); its keys/values are what the image's queries re-aggregate.
        content: content latent (1, C, H, W) for style transfer, or None (texture synthesis).
        content_weight: weight of the query-matching content loss (published: 0.25).
        layers: AD layers (default `default_ad_layers`).
        masks: optional (image labels, style labels) integer maps: queries attend same-label keys only.
        noise_seed: if given, references are noised to t with noise from this seed (guided sampling); else clean.
        cache: keep the reference features of every timestep (to re-run a schedule, e.g. in benchmarks);
            otherwise only the last timestep's are kept (several steps at one t reuse them, noise included).
    """

    def __init__(
        self, teacher: Teacher, style: Tensor, content: Tensor | None = None, content_weight: float = 0.25,
        layers: LayerSpec = None, masks: Masks | None = None, noise_seed: int | None = None, cache: bool = False,
    ):
        self.teacher, self.style, self.content, self.content_weight = teacher, style, content, content_weight
        self.masks, self.keep_all, self.cache = masks, cache, {}
        self.generator = None if noise_seed is None else torch.Generator().manual_seed(noise_seed)
        self.capture = AttentionCapture(teacher.unet, default_ad_layers(teacher.unet) if layers is None else layers,
                                        record=("q", "k", "v", "out"))
        self.schedule = noise_scheduler(teacher)
        with torch.no_grad():
            self.embeds = teacher.encode_prompts([""])

    def _forward(self, latent: Tensor, timesteps: list[int]) -> dict[str, dict[str, Tensor]]:
        """Records of the AD layers for latent i at timesteps[i] (a batch-1 latent is expanded)."""
        latent = latent.expand(len(timesteps), *latent.shape[1:])
        with self.capture:
            self.teacher.unet(latent, torch.tensor(timesteps, device=latent.device),
                              self.embeds.expand(len(timesteps), -1, -1))
            return self.capture.records

    @torch.no_grad()
    def _features(self, latent: Tensor, timesteps: list[int], keys: tuple[str, ...], chunk: int = 32) -> list[dict]:
        """Records of `keys` for `latent` at each timestep, `chunk` timesteps per UNet pass."""
        features = []
        for start in range(0, len(timesteps), chunk):
            part = timesteps[start : start + chunk]
            x = latent
            if self.generator is not None:
                noise = torch.randn((len(part), *latent.shape[1:]), generator=self.generator).to(latent)
                x = self.schedule.add_noise(latent.expand_as(noise), noise, torch.tensor(part))
            records = self._forward(x, part)
            features += [_select(records, i, keys) for i in range(len(part))]
        return features

    def references(self, timesteps: Sequence[int]) -> list[tuple[dict, dict | None]]:
        """[(style K/V records, content Q records or None)] per timestep; missing ones in one batched pass."""
        timesteps = [int(t) for t in timesteps]
        missing = [t for t in dict.fromkeys(timesteps) if t not in self.cache]
        if missing:
            if not self.keep_all:
                self.cache = {t: self.cache[t] for t in timesteps if t in self.cache}
            styles = self._features(self.style, missing, ("k", "v"))
            contents = self._features(self.content, missing, ("q",)) if self.content is not None else [None] * len(missing)
            self.cache.update(zip(missing, zip(styles, contents)))
        return [self.cache[t] for t in timesteps]

    def __call__(self, latent: Tensor, t: int | Sequence[int]) -> dict[str, Tensor]:
        """Per-sample {"loss", "ad", "content"}, each (B,), differentiable w.r.t. `latent` (B, C, H, W).

        `t`: one timestep for all, or one per sample.
        """
        timesteps = [int(t)] * len(latent) if isinstance(t, int) else [int(x) for x in t]
        refs = self.references(timesteps)
        records = self._forward(latent, timesteps)
        ad = torch.stack([ad_loss(_select(records, i), style, masks=self.masks) for i, (style, _) in enumerate(refs)])
        if self.content is None:
            content = torch.zeros_like(ad)
        else:
            content = torch.stack([content_loss(_select(records, i), c) for i, (_, c) in enumerate(refs)])
        return {"loss": ad + self.content_weight * content, "ad": ad, "content": content}


def split_samples(latent: Tensor) -> list[Tensor]:
    """One leaf tensor per sample, so every sample has its own optimiser (and its own Muon matrices)."""
    return [x.detach().clone().requires_grad_(True) for x in latent.split(1)]


def ad_step(
    objective: ADObjective, samples: list[Tensor], optimizers: list[torch.optim.Optimizer], t: int | Sequence[int],
) -> dict[str, float]:
    """One optimiser step of each sample on its own loss at timestep t (or one t per sample); batch-mean losses."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    losses = objective(torch.cat(samples), t)
    losses["loss"].sum().backward()  # a sum: each sample gets exactly the gradient of its own loss
    finite = bool(losses["loss"].isfinite().all()) and all(bool(x.grad.isfinite().all()) for x in samples)
    if finite:  # else skipped: a NaN step would poison the latent for good; the caller's NonFiniteGuard counts it
        for opt in optimizers:
            opt.step()
    return {k: v.mean().item() for k, v in losses.items()}


Factory = Callable[[Tensor], torch.optim.Optimizer]
StepCallback = Callable[[dict[str, float], Tensor], None]  # (the step's history row, the latent after it)


def optimize_latent(
    objective: ADObjective, latent: Tensor, timesteps: Sequence[int] | Tensor,
    optimizer: str | Factory | Sequence[Factory] = "adam", lr: float | None = None, progress: bool = True,
    on_step: StepCallback | None = None,
) -> tuple[Tensor, History]:
    """Walk `timesteps` with one optimiser step each on the objective; return (latent, per-step losses).

    Each sample of the batch `latent` is an independent run with its own optimiser. `optimizer`: a name
    from OPTIMIZERS (with `lr`, default DEFAULT_LR), a factory latent -> optimiser (e.g. a LatentMuon with
    another layout), or one factory per sample (runs of several optimisers in lockstep, one UNet pass per
    step). `on_step(step, latent)` runs after each update (e.g. to evaluate); it must not modify it.
    """
    samples = split_samples(latent)
    if isinstance(optimizer, str):
        optimizers = [make_latent_optimizer(optimizer, x, lr) for x in samples]
    else:
        factories = [optimizer] * len(samples) if callable(optimizer) else list(optimizer)
        if len(factories) != len(samples):
            raise ValueError(f"{len(factories)} optimiser factories for {len(samples)} latents")
        optimizers = [make(x) for make, x in zip(factories, samples)]
    history: History = []
    guard = NonFiniteGuard(NONFINITE_LIMIT, "a learning rate (--lr) too high", kept="nothing was written")
    bar = progress_bar(desc="AD", iterable=timesteps, disable=not progress, leave=False)
    for step, t in enumerate(bar):
        history.append({"step": step, "timestep": int(t), **ad_step(objective, samples, optimizers, int(t))})
        guard.observe(step + 1, all_finite(history[-1]["loss"]))
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        if on_step is not None:
            on_step(history[-1], torch.cat(samples).detach())
    return torch.cat(samples).detach(), history
