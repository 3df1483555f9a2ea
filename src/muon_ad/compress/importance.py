"""What pruning ranks by: attention heads by the entropy of their attention rows, and every parameter by an
exponential moving average of its gradient sensitivity; torch-pruning reduces these over each coupled group.

- Head focus: 1 − H/log(N), H the entropy of a head's attention rows (softmax over N keys), averaged over rows
  and batches, from the project's `AttentionCapture` (maps="full"). A head whose rows are near uniform only
  averages its input (focus ≈ 0); a masked head (zero queries and keys) has exactly uniform rows.
- Sensitivity: EMA over batches of |w · ∂L/∂w| (first-order Taylor estimate of the loss change when w is
  removed), with L the L1 to the batch's AD target when the batch has one, else the size of the change the
  student makes to its content (a label-free stand-in: what removing w would do to the stylisation).
- `CriterionImportance` hands these to torch-pruning's own group reduction (GroupMagnitudeImportance with p=1
  over the sensitivity tensors), so GroupNorm groups, residual sums, skip concatenations and attention heads
  are scored as the dependency graph couples them; heads are then weighted by their focus.
The baseline criterion is torch-pruning's plain L2 group magnitude (`magnitude_importance`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch_pruning as tp
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn

from muon_ad.attention.capture import AttentionCapture

CRITERIA = ("entropy", "magnitude")


def attention_layers(model: nn.Module) -> list[str]:
    """Every diffusers `Attention` module (self and cross) by name."""
    return [name for name, m in model.named_modules() if isinstance(m, Attention)]


@torch.no_grad()
def head_focus(model: nn.Module, batches: Iterable[tuple[Tensor, ...]]) -> dict[str, Tensor]:
    """1 − normalised row entropy per head, (heads,) per attention layer, averaged over `batches`."""
    totals: dict[str, Tensor] = {}
    count = 0
    with AttentionCapture(model, layers=attention_layers(model), record=(), maps="full") as capture:
        for content, style, *_ in batches:
            model(content, style)
            for name, record in capture.records.items():
                p = record["maps"].float()  # (B, heads, Nq, Nk)
                entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(p.shape[-1])
                totals[name] = totals.get(name, 0) + entropy.mean(dim=(0, 2))
            count += 1
    if not count:
        raise ValueError("head_focus needs at least one batch")
    return {name: (1.0 - total / count).clamp_min(0.0) for name, total in totals.items()}


class SensitivityEMA:
    """EMA of |w · grad| for every parameter of `model`, fed by `observe` (one backward pass each)."""

    def __init__(self, model: nn.Module, decay: float = 0.9):
        self.model, self.decay = model, decay
        self.scores: dict[str, Tensor] = {}

    @torch.no_grad()
    def observe(self) -> None:
        for name, p in self.model.named_parameters():
            if p.grad is None:
                continue
            value = (p.detach() * p.grad).abs().float()
            old = self.scores.get(name)
            self.scores[name] = value if old is None else old.mul_(self.decay).add_(value, alpha=1 - self.decay)

    def accumulate(self, batches: Iterable[tuple[Tensor, ...]]) -> SensitivityEMA:
        """One backward pass per batch of the loss in the module docstring; gradients are left cleared."""
        was_training = self.model.training
        self.model.eval()
        for batch in batches:
            content, style = batch[0], batch[1]
            self.model.zero_grad(set_to_none=True)
            image = self.model(content, style)
            target = batch[2] if len(batch) > 2 else content
            (image - target).abs().mean().backward()
            self.observe()
        self.model.zero_grad(set_to_none=True)
        self.model.train(was_training)
        return self


class CriterionImportance(tp.importance.GroupMagnitudeImportance):
    """torch-pruning group importance over sensitivity scores (by parameter name) instead of the weights
    themselves, with attention channels weighted by their head's focus (by attention module name)."""

    def __init__(self, model: nn.Module, scores: dict[str, Tensor], focus: dict[str, Tensor]):
        super().__init__(p=1, group_reduction="mean", normalizer=None)
        self.names = {m: name for name, m in model.named_modules()}
        self.scores = scores
        # to_q / to_k / to_v of each attention layer → that layer's head focus
        self.head_of = {getattr(m, part): focus[name] for name, m in model.named_modules()
                        if isinstance(m, Attention) and name in focus for part in ("to_q", "to_k", "to_v")}

    @torch.no_grad()
    def __call__(self, group) -> Tensor:
        swapped = []
        try:
            for dep, _ in group:
                layer = dep.layer
                if layer not in self.names or any(layer is s for s, _, _ in swapped):
                    continue
                for attr in ("weight", "bias"):
                    param = getattr(layer, attr, None)
                    key = f"{self.names[layer]}.{attr}"
                    if isinstance(param, nn.Parameter):
                        swapped.append((layer, attr, param.data))
                        param.data = self.scores.get(key, torch.zeros_like(param)).to(param)
            imp = super().__call__(group)
        finally:
            for layer, attr, data in swapped:
                getattr(layer, attr).data = data
        for dep, _ in group:
            focus = self.head_of.get(dep.layer)
            if focus is not None and dep.pruning_fn == tp.pruner.function.prune_linear_out_channels:
                return imp * focus.to(imp).repeat_interleave(len(imp) // len(focus))
        return imp


def magnitude_importance() -> tp.importance.Importance:
    """The baseline: torch-pruning's L2 group magnitude (weights only, no data)."""
    return tp.importance.GroupMagnitudeImportance(p=2)
