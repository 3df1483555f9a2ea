"""Mixed precision: which autocast a run uses, decided in one place for every recipe."""

from __future__ import annotations

import torch

from muon_ad.errors import UserError

AMP_CHOICES = ("auto", "bf16", "none")


def autocast(amp: str, device: torch.device) -> torch.autocast:
    """bf16 autocast for "bf16", and for "auto" on CUDA only: on CPUs without bf16 units bf16 matmuls are
    7-50x slower (measured), so "auto" runs fp32 there."""
    if amp not in AMP_CHOICES:
        raise UserError(f"train.amp={amp!r}: choose {', '.join(AMP_CHOICES)}")
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
