"""Pruning during `muon-ad distill`: a `StepHook` that follows the curriculum's keep_rate schedule.

Before each step the hook reads `plan.keep_rate`, rounded up to a multiple of `quantum` (so masks change a
few times per phase, not every step, and never prune more than asked). When that value changes it scores the
student (the criterion of `compress.prune`, on fixed seeded batches of the run's training pairs), plans the
cut with torch-pruning and masks the student: the pruned entries are handed to `Muon.set_mask`, which masks
their gradients and updates so Muon (and the AdamW group beside it) keeps them exactly zero, and the affected
norms see only kept channels. Masked entries then score zero, so later, tighter plans keep them pruned.
When the run ends, `finish` re-applies the masks to the final (EMA) weights and compacts the student.

Resuming: the hook holds no state of its own; at its first step after a resume it plans again from the
resumed weights, whose masked entries are zero and so are cut again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from muon_ad.checks import one_of
from muon_ad.compress.masks import ChannelMasks
from muon_ad.compress.prune import PruneRoot, compact, importance_for, plan_masks, plan_pruning
from muon_ad.distill.curriculum import StepPlan
from muon_ad.models.student import Student

Batches = Callable[[], Iterable[tuple[Tensor, ...]]]


class PruningHook:
    prunes = True
    quantises = False

    def __init__(self, criterion: str = "entropy", batches: Batches | None = None, quantum: float = 0.05):
        one_of("pruning criterion", criterion, ("entropy", "magnitude"))
        self.criterion, self.batches, self.quantum = criterion, batches, quantum
        self.keep: float | None = None
        self.plan: list[PruneRoot] = []
        self.masks = ChannelMasks()

    def target(self, keep_rate: float) -> float:
        return min(1.0, math.ceil(keep_rate / self.quantum - 1e-9) * self.quantum)

    def __call__(self, plan: StepPlan, student: Student, optimizer: torch.optim.Optimizer) -> None:
        keep = self.target(plan.keep_rate)
        if keep == self.keep:
            return
        self.keep = keep
        batches = list(self.batches()) if self.batches is not None and self.criterion == "entropy" else None
        self.plan = plan_pruning(student, keep, self.criterion, importance_for(student, self.criterion, batches))
        masks = plan_masks(student, self.plan)
        params = dict(student.named_parameters())
        for name in set(self.masks.params) - set(masks.params):  # a looser plan: unmask what it keeps
            if hasattr(optimizer, "set_mask"):
                optimizer.set_mask(params[name], None)
        self.masks = masks
        masks.apply(student, optimizer)

    @torch.no_grad()
    def mask(self, student: Student) -> None:
        """Zero the pruned entries of weights that did not go through the optimizer (the EMA's)."""
        self.masks.apply(student)

    def finish(self, student: Student) -> Student:
        """The final student with the masked channels removed (itself when nothing was pruned)."""
        if not self.plan:
            return student
        self.mask(student)
        return compact(student, self.plan)
