"""Muon on a latent tensor: the optimiser of attention-distillation synthesis, where the latent is the variable.

A latent (B, C, H, W) is not a weight, so "the matrix" is a choice:

* layout="channels" (default): each sample is a C×(H·W) matrix. With C = 4 its orthogonalised update
  has four orthonormal rows: every channel moves by the same amount, whatever its gradient's scale.
* layout="spatial": each channel map is an H×W matrix, orthogonalised on its own.

The update is scaled to RMS ≈ lr per element (×√max(rows, cols), the inverse of an orthogonal matrix's
RMS), which is the size of Adam's first steps, so Adam's lr is a sensible starting point.

Defaults, measured with the ad-convergence protocol (built-in teacher, 64 px, 100 steps, lr tuned per
layout on two held-out cases, three evaluation cases): "channels" reached a lower loss than "spatial"
at every momentum tried (held-out geometric mean 0.277 vs 0.316 at momentum 0.8), and momentum 0.8 beat
0.9 and 0.95 (0.277, 0.290, 0.330): the objective changes with the timestep at every step, so a short
memory serves better than the 0.95 used for weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from muon_ad.optim.muon import nesterov_momentum_
from muon_ad.optim.newton_schulz import KELLER_COEFFICIENTS, orthogonalize, resolve_ns_dtype

LAYOUTS = ("channels", "spatial")


def latent_matrices(x: Tensor, layout: str) -> Tensor:
    """View a latent (B, C, *spatial) as a batch of matrices: (B, C, prod(spatial)) or (B·C, H, W)."""
    if layout == "channels" and x.ndim >= 3:
        return x.reshape(x.shape[0], x.shape[1], -1)
    if layout == "spatial" and x.ndim == 4:
        return x.reshape(-1, *x.shape[-2:])
    needs = "(B, C, ...)" if layout == "channels" else "(B, C, H, W)"
    raise ValueError(f"layout {layout!r} needs a latent of shape {needs}, got {tuple(x.shape)}")


class LatentMuon(torch.optim.Optimizer):
    """Nesterov momentum, then a Newton–Schulz orthogonalised step on each latent's matrices (see module doc)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.05,
        momentum: float = 0.8,
        nesterov: bool = True,
        layout: str = "channels",
        ns_steps: int = 5,
        ns_coefficients: tuple[float, ...] = KELLER_COEFFICIENTS,
        ns_dtype: str = "auto",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: choose from {', '.join(LAYOUTS)}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, layout=layout, ns_steps=ns_steps,
                        ns_coefficients=ns_coefficients, ns_dtype=ns_dtype)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs = [state["momentum_buffer"]]
                (update,) = nesterov_momentum_(bufs, [p.grad], group["momentum"], group["nesterov"])
                matrices = latent_matrices(update, group["layout"])
                ortho = orthogonalize(matrices, group["ns_steps"], group["ns_coefficients"],
                                      resolve_ns_dtype(group["ns_dtype"], p.device))
                p.add_(ortho.view_as(p), alpha=-group["lr"] * math.sqrt(max(matrices.shape[-2:])))
        return loss
