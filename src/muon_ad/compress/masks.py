"""Channel masks on a full-width student that behave exactly like removing the channels.

Zeroing a pruned channel's weights is not enough to make the masked student compute what the compacted one
does: a zero channel still enters the mean and variance of its GroupNorm group (and of a LayerNorm), so the
kept channels would be normalised differently. `ChannelMasks` therefore does two things: it zeroes every
pruned entry (producers' rows and biases, consumers' columns, norm scales and shifts; `Muon.set_mask` keeps
them zero through training), and it makes each affected norm compute its statistics over the kept channels
only (a forward hook, `KeptChannelsNorm`), grouped as the compacted GroupNorm will group them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


def _group_norm_kept(x: Tensor, keep: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm over the kept channels, grouped as the compacted GroupNorm groups them: the kept channels in
    order, cut into `num_groups` equal runs (after a skip concatenation these runs need not follow the original
    groups' borders)."""
    kept = keep.nonzero().flatten()
    groups = norm.num_groups
    if len(kept) % groups:
        raise ValueError(f"{len(kept)} kept channels cannot form {groups} GroupNorm groups")
    member = torch.zeros(groups, x.shape[1], dtype=x.dtype, device=x.device)  # (G, C) one-hot of kept channels
    member[torch.arange(len(kept), device=x.device) // (len(kept) // groups), kept.to(x.device)] = 1.0
    flat = x.flatten(2)  # (B, C, L)
    count = member.sum(1) * flat.shape[-1]
    mean = torch.einsum("bcl,gc->bg", flat, member) / count
    centred = flat - torch.einsum("bg,gc->bc", mean, member).unsqueeze(-1)
    var = torch.einsum("bcl,gc->bg", centred * centred, member) / count
    scale = torch.einsum("bg,gc->bc", torch.rsqrt(var + norm.eps), member).unsqueeze(-1)  # 0 on removed channels
    out = (centred * scale).view_as(x)
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    return out * norm.weight.view(shape) + norm.bias.view(shape) if norm.affine else out


def _layer_norm_kept(x: Tensor, keep: Tensor, norm: nn.LayerNorm) -> Tensor:
    m = keep.to(x.dtype)
    count = m.sum()
    mean = (x * m).sum(dim=-1, keepdim=True) / count
    var = (((x - mean) * m) ** 2).sum(dim=-1, keepdim=True) / count
    out = (x - mean) * torch.rsqrt(var + norm.eps) * m
    if norm.weight is not None:
        out = out * norm.weight
    return out + norm.bias if norm.bias is not None else out


class KeptChannelsNorm:
    """Forward hook replacing a GroupNorm's or LayerNorm's output by the same norm over the kept channels."""

    def __init__(self, keep: Tensor):
        self.keep = keep

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        fn = _group_norm_kept if isinstance(module, nn.GroupNorm) else _layer_norm_kept
        return fn(args[0], self.keep.to(args[0].device), module)


def remove_norm_hooks(model: nn.Module) -> None:
    """Drop every `KeptChannelsNorm` hook (a compacted or copied model must not carry them)."""
    for m in model.modules():
        for key in [k for k, hook in m._forward_hooks.items() if isinstance(hook, KeptChannelsNorm)]:
            del m._forward_hooks[key]


@dataclass
class ChannelMasks:
    """Per-parameter 0/1 masks (by parameter name) and per-norm kept-channel masks (by module name)."""

    params: dict[str, Tensor] = field(default_factory=dict)
    norms: dict[str, Tensor] = field(default_factory=dict)

    def add(self, param_name: str, shape: torch.Size, dim: int, idxs: list[int]) -> None:
        mask = self.params.setdefault(param_name, torch.ones(shape))
        mask.index_fill_(dim, torch.as_tensor(idxs, dtype=torch.long), 0.0)

    def drop_norm_channels(self, module_name: str, channels: int, idxs: list[int]) -> None:
        keep = self.norms.setdefault(module_name, torch.ones(channels, dtype=torch.bool))
        keep[torch.as_tensor(idxs, dtype=torch.long)] = False

    @property
    def pruned_fraction(self) -> float:
        """Fraction of the masked parameters' entries that are zeroed."""
        total = sum(m.numel() for m in self.params.values())
        return 1.0 - sum(float(m.sum()) for m in self.params.values()) / max(1, total)

    @torch.no_grad()
    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the pruned entries of `model` (through `optimizer.set_mask` when it has one, so its updates keep
        them zero) and install the kept-channel norms, replacing any earlier masks."""
        remove_norm_hooks(model)
        params = dict(model.named_parameters())
        for name, mask in self.params.items():
            p = params[name]
            if optimizer is not None and hasattr(optimizer, "set_mask"):
                optimizer.set_mask(p, mask)
            else:
                p.mul_(mask.to(p.device, p.dtype))
        modules = dict(model.named_modules())
        for name, keep in self.norms.items():
            modules[name].register_forward_hook(KeptChannelsNorm(keep))
