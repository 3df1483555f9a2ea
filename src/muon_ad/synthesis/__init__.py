"""Optimisation-based attention distillation with a frozen teacher: style transfer, texture synthesis,
AD-guided sampling (Adam, as published, or Muon)."""

from muon_ad.synthesis.ad_loop import (
    DEFAULT_LR,
    OPTIMIZERS,
    ADObjective,
    ddim_timesteps,
    default_ad_layers,
    make_latent_optimizer,
    optimize_latent,
)
from muon_ad.synthesis.guided import guided_sample
from muon_ad.synthesis.loss_curve import loss_curve_paths, save_loss_curve
from muon_ad.synthesis.tiling import circular_padding
from muon_ad.synthesis.transfer import (
    SynthesisResult,
    fit_size,
    size_multiple,
    stylize,
    stylize_batch,
    synthesize,
    texture,
)

__all__ = [
    "DEFAULT_LR",
    "OPTIMIZERS",
    "ADObjective",
    "SynthesisResult",
    "circular_padding",
    "ddim_timesteps",
    "default_ad_layers",
    "fit_size",
    "guided_sample",
    "loss_curve_paths",
    "make_latent_optimizer",
    "optimize_latent",
    "save_loss_curve",
    "size_multiple",
    "stylize",
    "stylize_batch",
    "synthesize",
    "texture",
]
