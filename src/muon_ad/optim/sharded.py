"""ZeRO-1 Muon for torch.distributed: each rank owns a share of the parameters, holds only their optimizer
state, orthogonalises only its share of the matrices, and the new values are all-gathered.

Gradients must already be identical on every rank (averaged by DDP or the trainer's own all-reduce).
Ownership is a deterministic function of the parameter shapes and the world size (greedy balance of
Newton–Schulz cost), so every rank agrees on it without talking. The update of one parameter does not
depend on the others, so the result equals the single-process step.

`state_dict()` is collective: it gathers every rank's share into the ordinary, unsharded Muon format,
so a checkpoint saved with N ranks loads into M ranks or into a plain `Muon`. (Saving only the local
share — where only the owning rank holds correct momentum — is the bug this avoids.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from muon_ad.optim.muon import Muon, matrix_shape


class ShardedMuon(Muon):
    """`Muon` with ZeRO-1 state partitioning over `process_group` (default: the world). Same arguments."""

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict], process_group: dist.ProcessGroup | None = None, **kwargs: Any
    ) -> None:
        self.process_group = process_group
        super().__init__(params, **kwargs)

    def owners(self) -> dict[Tensor, int]:
        """The rank that updates each parameter: largest cost first, to the least loaded rank."""
        world = dist.get_world_size(self.process_group)
        params = [(p, g["use_muon"]) for g in self.param_groups for p in g["params"]]
        # Newton–Schulz costs ~rows·cols·min(rows, cols); an AdamW update costs ~numel.
        cost = [p.numel() * (min(matrix_shape(p)) if muon else 1) for p, muon in params]
        load, owner = [0] * world, {}
        for i in sorted(range(len(params)), key=lambda i: -cost[i]):
            rank = min(range(world), key=load.__getitem__)
            owner[params[i][0]] = rank
            load[rank] += cost[i]
        return owner

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, owner = dist.get_rank(self.process_group), self.owners()
        for group in self.param_groups:
            self._update(group, [p for p in group["params"] if p.grad is not None and owner[p] == rank])
        self._all_gather(owner)
        return loss

    def _all_gather(self, owner: dict[Tensor, int]) -> None:
        """Every rank packs its own parameters into one padded flat buffer per dtype; all-gather; unpack."""
        rank, world = dist.get_rank(self.process_group), dist.get_world_size(self.process_group)
        params = [p for g in self.param_groups for p in g["params"]]
        for dtype in dict.fromkeys(p.dtype for p in params):
            shares = [[p for p in params if p.dtype == dtype and owner[p] == r] for r in range(world)]
            size = max(sum(p.numel() for p in share) for share in shares)
            local = torch.zeros(size, dtype=dtype, device=params[0].device)
            if shares[rank]:
                flat = torch.cat([p.reshape(-1) for p in shares[rank]])
                local[: flat.numel()] = flat
            chunks = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(chunks, local, group=self.process_group)
            for r, share in enumerate(shares):
                offset = 0
                for p in share:
                    if r != rank:
                        p.copy_(chunks[r][offset : offset + p.numel()].view_as(p))
                    offset += p.numel()

    def state_dict(self) -> dict:
        """The full, unsharded state (collective: every rank must call it)."""
        local = super().state_dict()
        on_cpu = {i: {k: v.cpu() if isinstance(v, Tensor) else v for k, v in s.items()}
                  for i, s in local["state"].items()}
        shares: list[dict] = [{} for _ in range(dist.get_world_size(self.process_group))]
        dist.all_gather_object(shares, on_cpu, group=self.process_group)
        full: dict[int, dict] = {}
        for share in shares:  # disjoint except masks, which every rank holds identically
            for i, s in share.items():
                full.setdefault(i, {}).update(s)
        return {"state": full, "param_groups": local["param_groups"]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a full state (from any number of ranks, or a plain Muon) and keep only this rank's share."""
        super().load_state_dict(state_dict)
        rank, owner = dist.get_rank(self.process_group), self.owners()
        for p, state in self.state.items():
            if owner[p] != rank:
                for key in [k for k in state if k != "mask"]:
                    del state[key]
