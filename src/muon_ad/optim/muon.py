"""Muon for every matrix-shaped parameter of a model, conv kernels included, with AdamW for the rest.

One optimizer object holds both kinds of param group (`use_muon=True/False`), so callers get one
`step()`, one `state_dict()` and one lr scheduler. `build_optimizer` (hybrid.py) makes the split.

Learning rates — the common pitfall: Muon's update is an orthogonal matrix, RMS ≈ 1/√max(rows, cols),
so its lr is not AdamW's.
* `adjust_lr="original"` (Keller Jordan's; scale √max(1, rows/cols)): use lr ≈ 0.02. AdamW's 1e-3 here
  makes updates ~20x too small; the constructor warns.
* `adjust_lr="match_rms_adamw"` (Moonshot's; scale 0.2·√max(rows, cols), giving AdamW's typical update
  RMS of 0.2): AdamW's lr and weight decay carry over unchanged.
Weight decay is decoupled and uses the unadjusted lr (p ← p·(1 − lr·wd)), as in torch.optim.Muon.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim.adam import adam

from muon_ad.optim.newton_schulz import KELLER_COEFFICIENTS, orthogonalize, resolve_ns_dtype

logger = logging.getLogger("muon_ad.optim")

ADJUST_LR = ("original", "match_rms_adamw")


def matrix_shape(p: Tensor) -> tuple[int, int]:
    """The matrix Muon sees: (out, in·kh·kw) for a conv kernel, the tensor itself for a matrix."""
    return p.shape[0], p[0].numel()


def adjusted_lr(lr: float, adjust_lr: str, rows: int, cols: int) -> float:
    """lr scaled so the orthogonal update has a shape-independent size (see the module docstring)."""
    if adjust_lr == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    return lr * 0.2 * math.sqrt(max(rows, cols))


def nesterov_momentum_(bufs: list[Tensor], grads: list[Tensor], momentum: float, nesterov: bool) -> list[Tensor]:
    """Update the momentum buffers in place and return the directions to orthogonalise.

    The buffer is an EMA (buf ← μ·buf + (1−μ)·g, torch's form); Keller's buf ← μ·buf + g differs only by
    the factor 1−μ, which Newton–Schulz normalises away.
    """
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    return list(torch._foreach_lerp(grads, bufs, momentum)) if nesterov else bufs


class Muon(torch.optim.Optimizer):
    """Muon (momentum, then Newton–Schulz orthogonalisation) on groups with `use_muon=True` (the default),
    AdamW (torch's implementation) on groups with `use_muon=False`.

    Muon groups accept any parameter with ndim >= 2; conv kernels are flattened to (out, in·kh·kw), and
    matrices of the same shape are orthogonalised together as one batch. 1-D parameters in a Muon group
    are an error: put them in an AdamW group (build_optimizer does).

    Args:
        lr: Muon lr; ~0.02 with adjust_lr="original", AdamW's lr with "match_rms_adamw".
        momentum, nesterov: Nesterov momentum, 0.95 by default.
        weight_decay: decoupled weight decay (p ← p·(1 − lr·wd)).
        adjust_lr: "original" or "match_rms_adamw" (module docstring).
        ns_steps, ns_coefficients: Newton–Schulz steps and (a, b, c) coefficients, one triple for all steps
            or one per step (e.g. POLAR_EXPRESS_COEFFICIENTS).
        ns_dtype: "auto" (bf16 on CUDA, fp32 elsewhere), "bfloat16", "float16" or "float32".
        ns_eps: floor of the norm the input is divided by.
        betas, eps: AdamW's, for `use_muon=False` groups (their lr and weight_decay are the group's own).

    Masks: `set_mask(p, mask)` zeroes the pruned entries and keeps them exactly zero: gradients are masked
    before momentum, updates after orthogonalisation. Masks live in the optimizer state, so they survive a
    state_dict round trip.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        adjust_lr: str = "original",
        ns_steps: int = 5,
        ns_coefficients: tuple[float, ...] | tuple[tuple[float, float, float], ...] = KELLER_COEFFICIENTS,
        ns_dtype: str = "auto",
        ns_eps: float = 1e-7,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        defaults = dict(
            use_muon=True, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            adjust_lr=adjust_lr, ns_steps=ns_steps, ns_coefficients=ns_coefficients, ns_dtype=ns_dtype,
            ns_eps=ns_eps, betas=betas, eps=eps,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        if not (lr >= 0 and wd >= 0 and 0 <= momentum < 1):
            raise ValueError(f"need lr >= 0, weight_decay >= 0, 0 <= momentum < 1; got {lr}, {wd}, {momentum}")
        if not group["use_muon"]:
            return
        if group["adjust_lr"] not in ADJUST_LR:
            raise ValueError(f"adjust_lr {group['adjust_lr']!r}: choose from {', '.join(ADJUST_LR)}")
        resolve_ns_dtype(group["ns_dtype"], torch.device("cpu"))  # fail now on a bad name, not at the first step
        for p in group["params"]:
            if p.ndim < 2:
                raise ValueError(
                    f"Muon got a {p.ndim}-D parameter of shape {tuple(p.shape)}; biases, norms and other vectors "
                    "belong in an AdamW group ({'params': [...], 'use_muon': False}); build_optimizer does this"
                )
        if group["adjust_lr"] == "original" and 0 < group["lr"] < 5e-3:
            logger.warning(
                "Muon lr=%g with adjust_lr='original' looks like an AdamW lr: updates will be ~%.0fx smaller than "
                "usual. Use lr≈0.02, or adjust_lr='match_rms_adamw' to reuse AdamW's lr.",
                group["lr"], 0.02 / group["lr"],
            )

    def set_mask(self, p: Tensor, mask: Tensor | None) -> None:
        """Keep the entries of `p` where `mask` is 0 at exactly zero from now on (None removes the mask)."""
        state = self.state[p]
        if mask is None:
            state.pop("mask", None)
            return
        if mask.shape != p.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match parameter shape {tuple(p.shape)}")
        # Stored in the parameter's dtype because load_state_dict casts floating state to it anyway.
        state["mask"] = mask.to(device=p.device, dtype=p.dtype)
        with torch.no_grad():
            p.mul_(state["mask"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update(group, [p for p in group["params"] if p.grad is not None])
        return loss

    def _update(self, group: dict, params: list[Tensor]) -> None:
        """Update `params` (a subset of the group's, all with gradients): the unit ShardedMuon distributes."""
        if not params:
            return
        masks = [self.state[p].get("mask") for p in params]
        grads = [p.grad if m is None else p.grad * m for p, m in zip(params, masks)]
        if group["use_muon"]:
            self._muon_update(group, params, grads)
        else:
            self._adamw_update(group, params, grads)
        for p, m in zip(params, masks):
            if m is not None:
                p.mul_(m)

    def _muon_update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        updates = nesterov_momentum_(bufs, grads, group["momentum"], group["nesterov"])
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1 - lr * wd)
        buckets: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            buckets[(matrix_shape(p), p.device)].append(i)
        for ((rows, cols), device), index in buckets.items():
            batch = torch.stack([updates[i].reshape(rows, cols) for i in index])
            ortho = orthogonalize(batch, group["ns_steps"], group["ns_coefficients"],
                                  resolve_ns_dtype(group["ns_dtype"], device), group["ns_eps"])
            scale = adjusted_lr(lr, group["adjust_lr"], rows, cols)
            for i, o in zip(index, ortho):
                params[i].add_(o.view_as(params[i]), alpha=-scale)

    def _adamw_update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adam(
            params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
            [s["step"] for s in states], decoupled_weight_decay=True, amsgrad=False, beta1=beta1, beta2=beta2,
            lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
        )
