"""Plumbing every training recipe shares: checkpoints (safetensors + JSON, verified), the loop that stops on a
signal at a step boundary, the non-finite guard, mixed precision, EMA, the CSV + TensorBoard logger, and which
process of a distributed run writes."""

from muon_ad.training.checkpoint import (
    CorruptCheckpoint,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from muon_ad.training.distributed import is_main_process, rank
from muon_ad.training.ema import ema_weights
from muon_ad.training.guard import NonFiniteGuard, all_finite
from muon_ad.training.logger import MetricLogger
from muon_ad.training.loop import GracefulStop, progress_bar
from muon_ad.training.precision import AMP_CHOICES, autocast

__all__ = [
    "AMP_CHOICES",
    "CorruptCheckpoint",
    "GracefulStop",
    "MetricLogger",
    "NonFiniteGuard",
    "all_finite",
    "autocast",
    "ema_weights",
    "is_main_process",
    "latest_checkpoint",
    "load_checkpoint",
    "progress_bar",
    "rank",
    "resume_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
