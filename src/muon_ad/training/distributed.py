"""Distributed data-parallel training on torch.distributed, for any recipe launched by `torchrun` or `accelerate launch`.

The launcher sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (and LOCAL_RANK); `setup` joins the process group
from them (gloo on CPU, NCCL on CUDA) with a timeout on every collective, so a rank that hangs or dies stops the
others with an error instead of a hang. Without a launcher (WORLD_SIZE unset or 1) everything here is a no-op and a
recipe runs as one process.

What a recipe does with it, and why:
- every rank draws the same global batch from the same seeded RNG and keeps its own equal slice (`shard`): the
  sampling equivalent of DistributedSampler for batches drawn with replacement, and the reason a run on N ranks
  matches a one-process run of the same global batch (DDP averages the N equal-sized slices' gradients, which is
  the global batch's gradient) and every rank's RNG, hence the checkpoint's, stays the same;
- the model is wrapped in DDP (`wrap`) with an optional gradient-compression hook (`comm_hooks`);
- only the main process writes (logs, checkpoints, samples; `is_main_process`), the others stay quiet;
- per-step numbers the loop decides on (the loss it logs, the batch SSIM the curriculum adapts to, whether a
  signal asked for a stop) are agreed over all ranks (`mean_over_ranks`, `any_rank`), so no rank takes a
  different branch and waits forever in a collective the others never enter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from muon_ad import checks
from muon_ad.errors import UserError

log = logging.getLogger("muon_ad.training")

GRAD_COMPRESSION = ("none", "powersgd")
_COLLECTIVE_FAILURE = "gloo/transport"  # in every gloo "connection closed by peer" / "timed out waiting"


@dataclass
class DistributedConfig:
    """Settings that act only when the run is launched on several processes (`torchrun`, `accelerate launch`)."""

    timeout_s: float = 600.0  # on every collective: a dead or stuck rank stops the run after this long, not never
    grad_compression: str = "none"  # "powersgd": low-rank gradients with error feedback (a DDP comm hook)
    powersgd_rank: int = 4  # rank of PowerSGD's approximation of each gradient matrix (rank 1 lost 8 % in loss: bench comm)
    powersgd_start_step: int = 10  # plain all-reduce before this step (PowerSGD's own warm-up; at least 2)
    bucket_cap_mb: float = 1000.0  # DDP gradient bucket size: one bucket (PowerSGD on gloo fails with several)

    def __post_init__(self) -> None:
        checks.fields_within("distributed", self, ("timeout_s", "bucket_cap_mb"), 0, above=True)
        checks.fields_within("distributed", self, ("powersgd_rank",), 1)
        checks.fields_within("distributed", self, ("powersgd_start_step",), 2)
        checks.one_of("distributed.grad_compression", self.grad_compression, GRAD_COMPRESSION)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default process group; 0 when the run is not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def launched_world_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str, timeout_s: float) -> str:
    """Join the launcher's process group (once) and return this rank's device ("cuda" becomes cuda:LOCAL_RANK).

    No-op without a launcher. Ranks other than 0 log warnings only, so a run prints one copy of everything."""
    if launched_world_size() <= 1 or is_distributed():
        return device
    on_cuda = device.startswith("cuda")
    if on_cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_s)
    store, rank_, world = next(dist.rendezvous("env://", timeout=timeout))
    # Keys of their own per restart: torchrun's agent store outlives a failed attempt, and a restarted rank could read
    # the address its dead predecessor published and time out connecting to it (measured with torch 2.13).
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group("nccl" if on_cuda else "gloo", store=dist.PrefixStore(f"muon_ad/attempt-{attempt}", store),
                            rank=rank_, world_size=world, timeout=timeout)
    if not is_main_process():
        logging.getLogger("muon_ad").setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s), collectives time out after %g s", world_size(), dist.get_backend(),
             timeout_s)
    return device


def check_shards(batch_sizes: Sequence[tuple[str, int]]) -> None:
    """Refuse, in one line, a world size that cannot split every global batch into equal slices."""
    world = world_size()
    for name, size in batch_sizes:
        if size % world:
            raise UserError(f"{world} processes cannot share {name}={size} equally (each rank takes an equal slice "
                            f"of every batch): launch a number of processes that divides it, or change it")


def check_compression(cfg: DistributedConfig, projects_separately: bool) -> None:
    """Refuse, in one line, gradient compression on several processes when conflict projection averages each
    objective's gradient by hand (`average_gradients`, uncompressed): the compression hook would not see them."""
    if world_size() > 1 and projects_separately and cfg.grad_compression != "none":
        raise UserError(f"distributed.grad_compression={cfg.grad_compression} compresses DDP's all-reduce, but with "
                        "conflict projection each objective's gradient is averaged on its own, uncompressed: set "
                        "distill.conflict_projection=false or distributed.grad_compression=none")


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (its first dimension divides by the world size)."""
    return batch.reshape(world_size(), -1, *batch.shape[1:])[rank()]


def wrap(model: nn.Module, cfg: DistributedConfig, find_unused_parameters: bool = False) -> nn.Module:
    """The model in DistributedDataParallel (with cfg's gradient compression), or the model itself on one process.

    `find_unused_parameters`: a part frozen mid-run (requires_grad False) gets no gradient, which DDP must expect."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    from muon_ad.training.comm_hooks import register_compression

    device = next(model.parameters()).device
    ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                  bucket_cap_mb=cfg.bucket_cap_mb, find_unused_parameters=find_unused_parameters)
    register_compression(ddp, cfg)
    return ddp


def no_sync(model: nn.Module) -> contextlib.AbstractContextManager:
    """DDP's `no_sync` (this forward's backward all-reduces nothing) for a step whose gradients are averaged by hand
    (`average_gradients`), as conflict projection's are; a null context on one process."""
    return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()


def average_gradients(grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Each gradient averaged over the ranks (one all-reduce of them all, flattened): the global batch's gradient of
    one objective, where DDP would only average the sum of the objectives. None (no dependence) stays None: every
    rank runs the same graph. Unchanged on one process."""
    grads = list(grads)
    present = [g for g in grads if g is not None]
    if not is_distributed() or not present:
        return grads
    flat = torch.cat([g.reshape(-1) for g in present])
    dist.all_reduce(flat)
    flat /= world_size()
    averaged = iter(flat.split([g.numel() for g in present]))
    return [None if g is None else next(averaged).view_as(g) for g in grads]


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each number averaged over the ranks (one small all-reduce): the global batch's figure."""
    if not is_distributed():
        return values
    packed = torch.tensor([float(v) for v in values.values()], dtype=torch.float64)
    dist.all_reduce(packed)
    return dict(zip(values, (packed / world_size()).tolist()))


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any: a decision all ranks must take together."""
    if not is_distributed():
        return flag
    packed = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (e.g. makes a cache), then the others (which then read it)."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


@contextlib.contextmanager
def errors_from_rank0() -> Iterator[None]:
    """On several processes, one voice: rank 0 reports a user error (every rank meets the same one) and the others
    exit quietly; a collective that fails because another rank died or stopped answering becomes one line."""
    try:
        yield
    except UserError:
        if not is_main_process():
            raise SystemExit(2) from None
        raise
    except RuntimeError as error:  # DistError, or a comm hook's future failing, which surfaces as RuntimeError
        if not is_distributed() or not (isinstance(error, dist.DistError) or _COLLECTIVE_FAILURE in str(error).lower()):
            raise
        _ignore_sigterm()  # the launcher stops the survivors of a dead rank with SIGTERM: let this one say why first
        if not is_main_process():
            raise SystemExit(1) from None
        reason = str(error).strip().splitlines()[0].rsplit("] ", 1)[-1].split(". ")[0] or type(error).__name__
        raise UserError(f"another process of this run died or stopped answering ({reason}); the last "
                        "checkpoint is kept: run the same command to resume") from None


def _ignore_sigterm() -> None:
    """For a process already on its way out with its one-line report (signal handlers are set in the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()
