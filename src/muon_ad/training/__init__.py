"""Plumbing every training recipe shares: checkpoints (safetensors + JSON), the interruptible loop, mixed
precision, EMA, the CSV + TensorBoard logger, and which process of a distributed run writes."""

from muon_ad.training.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from muon_ad.training.distributed import is_main_process, rank
from muon_ad.training.ema import ema_weights
from muon_ad.training.logger import MetricLogger
from muon_ad.training.loop import progress_bar, saves_on_interrupt
from muon_ad.training.precision import AMP_CHOICES, autocast

__all__ = [
    "AMP_CHOICES",
    "MetricLogger",
    "autocast",
    "ema_weights",
    "is_main_process",
    "latest_checkpoint",
    "load_checkpoint",
    "progress_bar",
    "rank",
    "rng_state",
    "save_checkpoint",
    "saves_on_interrupt",
    "set_rng_state",
]
