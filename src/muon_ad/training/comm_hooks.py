"""Gradient communication of a DDP model: plain all-reduce or PowerSGD, and a count of the bytes collectives send.

PowerSGD (Vogels et al. 2019, torch's `powerSGD_hook`) sends each gradient matrix as two rank-r factors and keeps
what the approximation missed on each rank (error feedback), adding it to the next step's gradient: every
gradient component arrives eventually. Vectors (biases, norms) and matrices too small to gain go uncompressed in
one all-reduce. Before `powersgd_start_step` it all-reduces plainly, as torch requires (DDP rebuilds its buckets
after the first step). Measured torch 2.13 traps, avoided: `batched_powerSGD_hook` asserts on its first
compressed step, `bf16_compress_hook` refuses gloo, `quantization_pertensor_hook` raises IndexError; PowerSGD on
gloo with several buckets failed with a size mismatch, hence one bucket by default (`bucket_cap_mb`).

`CommCounter` wraps torch.distributed's Python collectives while it is active and adds up what each rank sends in
a ring schedule. DDP's default all-reduce runs in C++ where no wrapper sees it, so with a counter active the
uncompressed path runs through `allreduce_hook` below (the same all-reduce, issued from Python); the benchmark
also reads the loopback interface's byte counters, which see everything.
"""

# No `from __future__ import annotations`: DDP checks a hook's annotations at run time (dist.GradBucket, Future).
import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

    from muon_ad.training.distributed import DistributedConfig


def allreduce_hook(state: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's default: the bucket's gradients averaged over the ranks in one all-reduce (issued from Python)."""
    buffer = bucket.buffer().div_(dist.get_world_size())
    return dist.all_reduce(buffer, async_op=True).get_future().then(lambda fut: fut.value()[0])


def _powersgd_after_warmup(
    state: powersgd.PowerSGDState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """PowerSGD, with its plain warm-up steps through `allreduce_hook` (so that a counter sees them too)."""
    if state.iter < state.start_powerSGD_iter:
        state.maybe_increase_iter(bucket)
        return allreduce_hook(None, bucket)
    return powersgd.powerSGD_hook(state, bucket)


def register_compression(ddp: "DistributedDataParallel", cfg: "DistributedConfig") -> None:
    if cfg.grad_compression == "powersgd":
        state = powersgd.PowerSGDState(process_group=None, matrix_approximation_rank=cfg.powersgd_rank,
                                       start_powerSGD_iter=cfg.powersgd_start_step, use_error_feedback=True,
                                       warm_start=True)
        ddp.register_comm_hook(state, _powersgd_after_warmup)
    else:
        ddp.register_comm_hook(None, allreduce_hook)


class CommCounter:
    """Bytes this rank sends through torch.distributed's collectives while active (a ring schedule: an all-reduce
    of S bytes sends 2·(N−1)/N·S, an all-gather of an S-byte share (N−1)·S, a broadcast S from the root)."""

    NAMES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast")

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0
        self._originals: dict[str, object] = {}

    def start(self) -> None:
        world, rank = dist.get_world_size(), dist.get_rank()
        # name → (the argument holding what this rank contributes, the bytes it sends for S bytes of it)
        sent = {"all_reduce": ("tensor", lambda size, args: 2 * (world - 1) / world * size),
                "all_gather": ("tensor", lambda size, args: (world - 1) * size),
                "all_gather_into_tensor": ("input_tensor", lambda size, args: (world - 1) * size),
                "reduce_scatter_tensor": ("input", lambda size, args: (world - 1) / world * size),
                "broadcast": ("tensor", lambda size, args: size if args.get("src", 0) == rank else 0)}
        self._originals = {name: getattr(dist, name) for name in self.NAMES}

        def counted(name, original):
            signature = inspect.signature(original)
            key, cost = sent[name]

            def call(*args, **kwargs):
                bound = signature.bind(*args, **kwargs).arguments
                self.bytes += int(cost(_nbytes(bound[key]), bound))
                self.calls += 1
                return original(*args, **kwargs)
            return call

        for name, original in self._originals.items():
            setattr(dist, name, counted(name, original))

    def stop(self) -> None:
        for name, original in self._originals.items():
            setattr(dist, name, original)
        self._originals = {}

    @contextlib.contextmanager
    def active(self) -> Iterator["CommCounter"]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def loopback_bytes() -> int | None:
    """Bytes the loopback interface has transmitted since boot (/proc/net/dev), or None where it cannot be read."""
    try:
        for line in Path("/proc/net/dev").read_text().splitlines():
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[8])  # receive: 8 fields, then transmit bytes
    except (OSError, ValueError, IndexError):
        pass
    return None
