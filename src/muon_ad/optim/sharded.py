"""ZeRO-1 Muon for torch.distributed: each rank owns a share of the parameters, holds only their optimizer
state, orthogonalises only its share of the matrices, and the new values are all-gathered.

Gradients must already be identical on every rank (averaged by DDP or the trainer's own all-reduce).
Ownership is a deterministic function of the parameter shapes and the world size (greedy balance of
Newton–Schulz cost), so every rank agrees on it without talking. The update of one parameter does not
depend on the others, so the result equals the single-process step.

`state_dict()` is collective: it gathers every rank's share into the ordinary, unsharded Muon format,
so a checkpoint saved with N ranks loads into M ranks or into a plain `Muon`. (Saving only the local
share — where only the owning rank holds correct momentum — is the bug this avoids.)

The all-gather is ZeRO-1's whole cost: reduce-scatter + all-gather moves as many bytes as the all-reduce it
replaces, so ZeRO-1 alone never saves communication. `gather="bf16"` or `"int8"` sends each step's *update*
(new − old value) instead of the value, rounded to bf16, or to int8 in blocks of 256 with one fp32 scale each (as
ZeRO++'s quantised weight all-gather does): 2× or ~4× fewer bytes. The owner applies the same rounded update it
sends, so every rank keeps bit-identical parameters, and keeps the rounding error to add to its next update (error
feedback, state "gather_residual"), so no part of an update is lost, only delayed by a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from muon_ad.optim.muon import Muon, matrix_shape


GATHER = ("fp32", "bf16", "int8")
BLOCK = 256  # int8 updates: one scale per this many values


class ShardedMuon(Muon):
    """`Muon` with ZeRO-1 state partitioning over `process_group` (default: the world). Same arguments, and
    `gather`: how the new parameters travel, "fp32" (exact values) or the update in "bf16" / "int8"."""

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict], process_group: dist.ProcessGroup | None = None,
        gather: str = "fp32", **kwargs: Any
    ) -> None:
        if gather not in GATHER:
            raise ValueError(f"gather {gather!r}: choose from {', '.join(GATHER)}")
        self.process_group, self.gather = process_group, gather
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
        params = [p for g in self.param_groups for p in g["params"]]
        before = {p: p.detach().clone() for p in params if owner[p] == rank} if self.gather != "fp32" else {}
        for group in self.param_groups:
            self._update(group, [p for p in group["params"] if p.grad is not None and owner[p] == rank])
        self._all_gather(owner, before)
        return loss

    def _all_gather(self, owner: dict[Tensor, int], before: dict[Tensor, Tensor]) -> None:
        """Every rank packs its own parameters (or their rounded updates) into one padded byte buffer per dtype;
        all-gather; unpack."""
        rank, world = dist.get_rank(self.process_group), dist.get_world_size(self.process_group)
        params = [p for g in self.param_groups for p in g["params"]]
        for dtype in dict.fromkeys(p.dtype for p in params):
            shares = [[p for p in params if p.dtype == dtype and owner[p] == r] for r in range(world)]
            sizes = [self._payload_bytes(sum(p.numel() for p in share), dtype) for share in shares]
            local = torch.zeros(max(sizes), dtype=torch.uint8, device=params[0].device)
            if shares[rank]:
                payload = self._encode(shares[rank], before)
                local[: payload.numel()] = payload
            chunks = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(chunks, local, group=self.process_group)
            for r, share in enumerate(shares):
                if r == rank or not share:
                    continue
                flat = self._decode(chunks[r][: sizes[r]], sum(p.numel() for p in share), dtype)
                offset = 0
                for p in share:
                    values = flat[offset : offset + p.numel()].view_as(p)
                    p.copy_(values) if self.gather == "fp32" else p.add_(values)
                    offset += p.numel()

    def _payload_bytes(self, numel: int, dtype: torch.dtype) -> int:
        if self.gather == "fp32":
            return numel * dtype.itemsize
        if self.gather == "bf16":
            return numel * 2
        return -(-numel // BLOCK) * (BLOCK + 4)  # int8 values, padded to whole blocks, and one fp32 scale per block

    def _encode(self, share: list[Tensor], before: dict[Tensor, Tensor]) -> Tensor:
        """This rank's payload as bytes: its new values, or its updates rounded (the owner applies the rounded
        update too, and keeps the rounding error for its next one)."""
        if self.gather == "fp32":
            return torch.cat([p.reshape(-1) for p in share]).view(torch.uint8)
        update = torch.cat([(p - before[p] + self.state[p].get("gather_residual", 0)).reshape(-1) for p in share])
        if self.gather == "bf16":
            coded = update.bfloat16()
            payload, rounded = coded.view(torch.uint8), coded.to(update.dtype)
        else:
            blocks = torch.nn.functional.pad(update.float(), (0, -update.numel() % BLOCK)).view(-1, BLOCK)
            scale = blocks.abs().amax(1, keepdim=True).div(127).clamp_min(torch.finfo(torch.float32).tiny)
            q = blocks.div(scale).round().clamp(-127, 127).to(torch.int8)
            payload = torch.cat([q.view(torch.uint8).reshape(-1), scale.view(torch.uint8).reshape(-1)])
            rounded = self._decode(payload, update.numel(), update.dtype)
        offset = 0
        for p in share:
            n = p.numel()
            p.copy_(before[p] + rounded[offset : offset + n].view_as(p))
            self.state[p]["gather_residual"] = (update[offset : offset + n] - rounded[offset : offset + n]).view_as(p)
            offset += n
        return payload

    def _decode(self, payload: Tensor, numel: int, dtype: torch.dtype) -> Tensor:
        """The flat values (fp32) or rounded updates (bf16, int8) of one rank's payload."""
        if self.gather == "fp32":
            return payload.view(dtype)
        if self.gather == "bf16":
            return payload.view(torch.bfloat16).to(dtype)
        blocks = -(-numel // BLOCK)
        q = payload[: blocks * BLOCK].view(torch.int8).view(blocks, BLOCK)
        scale = payload[blocks * BLOCK : blocks * (BLOCK + 4)].view(torch.float32).view(blocks, 1)
        return (q.float() * scale).reshape(-1)[:numel].to(dtype)

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
