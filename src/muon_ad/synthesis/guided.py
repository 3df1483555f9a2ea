"""AD-guided sampling: ordinary DDIM text-to-image sampling, with a few AD optimiser steps on the latent
after every DDIM step, so the sample takes on a reference image's style.

This is diffusers' own `StableDiffusionPipeline` with a `callback_on_step_end` that edits the latents:
after the step t -> t_prev the latent is a noisy sample at t_prev, so the style reference is noised to
t_prev as well (seeded noise, drawn once per DDIM step) before its keys/values are taken, and a fresh
optimiser takes `ad_iters` steps on the AD loss (published: 3 Adam steps; lr 0.015 with a text prompt).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from muon_ad import DEFAULT_GUIDANCE_SCALE
from muon_ad.attention.capture import LayerSpec
from muon_ad.models.teacher import Teacher
from muon_ad.synthesis.ad_loop import (
    NONFINITE_LIMIT,
    ADObjective,
    History,
    ad_step,
    make_latent_optimizer,
    resolve_lr,
    split_samples,
)
from muon_ad.synthesis.transfer import fit_size, image_batch, size_multiple
from muon_ad.training import NonFiniteGuard, all_finite, progress_bar

# Adam: published with a text prompt. Muon: not tuned; LatentMuon's first steps have Adam's size per element.
GUIDED_LR = {"adam": 0.015, "muon": 0.015}


def guided_sample(
    teacher: Teacher, prompts: list[str], style: Image.Image, steps: int = 30, guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    seed: int = 0, ad_iters: int = 3, optimizer: str = "adam", lr: float | None = None, layers: LayerSpec = None,
    progress: bool = True, size: int | None = None,
) -> tuple[Tensor, History]:
    """Images (N, 3, size, size) in [-1, 1] for `prompts` (size: default the teacher's), steered toward `style`; and
    the AD loss of every step."""
    lr = resolve_lr(optimizer, lr, GUIDED_LR)
    size = size or teacher.image_size
    with torch.no_grad():
        style_latent = teacher.encode_images(image_batch(style, fit_size(*style.size, size, size_multiple(teacher))))
    objective = ADObjective(teacher, style_latent, layers=layers, noise_seed=seed)
    history: History = []
    guard = NonFiniteGuard(NONFINITE_LIMIT, "a learning rate too high", kept="nothing was written")
    bar = progress_bar(steps, desc=f"AD-guided sampling ({optimizer})", disable=not progress, leave=False)
    pipe = teacher.pipeline()
    pipe.set_progress_bar_config(disable=True)

    def ad_steps(pipe, index: int, t: Tensor, kwargs: dict) -> dict:
        t_prev = max(int(t) - pipe.scheduler.config.num_train_timesteps // pipe.scheduler.num_inference_steps, 0)
        samples = split_samples(kwargs["latents"])
        optimizers = [make_latent_optimizer(optimizer, x, lr) for x in samples]  # fresh state at every timestep
        with torch.enable_grad():  # the pipeline runs under no_grad
            for _ in range(ad_iters):
                history.append({"step": len(history), "timestep": t_prev, **ad_step(objective, samples, optimizers, t_prev)})
                guard.observe(len(history), all_finite(history[-1]["loss"]))
        bar.update()
        if history:
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        return {"latents": torch.cat(samples).detach()}

    generator = torch.Generator(teacher.device).manual_seed(seed)
    out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator, output_type="pt",
               height=size, width=size, callback_on_step_end=ad_steps, callback_on_step_end_tensor_inputs=["latents"])
    bar.close()
    return out.images * 2 - 1, history
