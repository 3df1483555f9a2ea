"""Which parameters Muon updates and which AdamW updates, from one config.

Muon is meant for hidden-layer matrices. The first layer (its input is raw pixels or latents, not
features), the last output layer, embeddings (each row is looked up alone, never mixed) and every 1-D
parameter (biases, norms) go to AdamW, each kind with its own lr and weight decay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from muon_ad.errors import UserError
from muon_ad.optim.muon import ADJUST_LR, Muon
from muon_ad.optim.newton_schulz import KELLER_COEFFICIENTS, NS_DTYPES
from muon_ad.optim.sharded import GATHER, ShardedMuon

logger = logging.getLogger("muon_ad.optim")


@dataclass
class OptimizerConfig:
    """Optimizer recipe. Two consistent settings:

    * adjust_lr "original" (default): lr ≈ 0.02 (not AdamW's 1e-3, which makes updates ~20x too small);
    * adjust_lr "match_rms_adamw": set lr and weight_decay to AdamW's (e.g. 1e-3 and 0.01); they carry over.
    """

    name: str = "muon"  # "muon" (Muon + AdamW) or "adamw" (AdamW everywhere, the baseline)
    lr: float = 0.02
    momentum: float = 0.95
    nesterov: bool = True
    weight_decay: float = 0.0
    adjust_lr: str = "original"  # or "match_rms_adamw"
    ns_steps: int = 5
    ns_coefficients: list[float] = field(default_factory=lambda: list(KELLER_COEFFICIENTS))  # 3, or 3 per step
    ns_dtype: str = "auto"  # bf16 on CUDA, fp32 on CPU (bf16 is slower there); or bfloat16/float16/float32
    adamw_lr: float = 1e-3
    adamw_betas: tuple[float, float] = (0.9, 0.999)
    adamw_eps: float = 1e-8
    adamw_weight_decay: float = 0.01
    adamw_names: str = ""  # comma-separated name fragments forced to AdamW, besides the automatic split
    zero1: bool = False  # on several processes: shard optimizer state across the ranks (ShardedMuon, ZeRO-1)
    zero1_gather: str = "fp32"  # how ZeRO-1's new parameters travel: fp32 values, or bf16 / int8 updates

    def __post_init__(self) -> None:
        for key, allowed in (("name", ("muon", "adamw")), ("adjust_lr", ADJUST_LR), ("ns_dtype", ("auto", *NS_DTYPES)),
                             ("zero1_gather", GATHER)):
            if getattr(self, key) not in allowed:
                raise UserError(f"optimizer.{key}={getattr(self, key)!r}: choose from {', '.join(allowed)}")
        if len(self.ns_coefficients) % 3 or not self.ns_coefficients:
            raise UserError(f"optimizer.ns_coefficients needs 3 floats per step, got {len(self.ns_coefficients)}")


def split_parameters(model: nn.Module, adamw_names: str = "") -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon parameters, AdamW parameters) among the trainable ones, in registration order.

    AdamW gets: ndim < 2, nn.Embedding weights, the first and the last >=2-D weight in registration order
    (conv_in and conv_out in a diffusers UNet), and names containing a fragment of `adamw_names`.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    forced = [f.strip() for f in adamw_names.split(",") if f.strip()]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    matrices = [n for n, p in named if p.ndim >= 2 and id(p) not in embeddings]
    ends = {matrices[0], matrices[-1]} if matrices else set()
    muon, adamw = [], []
    for name, p in named:
        to_adamw = p.ndim < 2 or id(p) in embeddings or name in ends or any(f in name for f in forced)
        (adamw if to_adamw else muon).append(p)
    return muon, adamw


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """One `Muon` holding a Muon group and an AdamW group (or, for name="adamw", AdamW everywhere); a
    `ShardedMuon` with `zero1` when torch.distributed runs several processes."""
    muon_params, adamw_params = split_parameters(model, cfg.adamw_names)
    if cfg.name == "adamw":
        muon_params, adamw_params = [], muon_params + adamw_params
    groups = []
    if muon_params:
        groups.append(dict(params=muon_params, use_muon=True))
    if adamw_params:
        groups.append(dict(params=adamw_params, use_muon=False, lr=cfg.adamw_lr, betas=tuple(cfg.adamw_betas),
                           eps=cfg.adamw_eps, weight_decay=cfg.adamw_weight_decay))
    if not groups:
        raise ValueError("the model has no trainable parameters")
    kwargs = dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
                  adjust_lr=cfg.adjust_lr, ns_steps=cfg.ns_steps, ns_coefficients=tuple(cfg.ns_coefficients),
                  ns_dtype=cfg.ns_dtype)
    if cfg.zero1 and dist.is_initialized() and dist.get_world_size() > 1:
        optimizer: Muon = ShardedMuon(groups, gather=cfg.zero1_gather, **kwargs)
    else:
        optimizer = Muon(groups, **kwargs)
    for label, params, lr in (("Muon", muon_params, cfg.lr), ("AdamW", adamw_params, cfg.adamw_lr)):
        logger.info("%s: %d tensors, %d parameters, lr %g", label, len(params), sum(p.numel() for p in params), lr)
    return optimizer
