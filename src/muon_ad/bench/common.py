"""What every benchmark returns (shared/BENCHMARKS.md is the contract).

A benchmark module exposes `run(quick: bool, device: str) -> BenchOutput`. The runner adds the name,
device, torch version and time, prints a table and writes the JSON. A benchmark that cannot run (no
GPU, no weights) raises `BenchUnavailable` with one clear line; it never returns a made-up value.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


class BenchUnavailable(RuntimeError):
    """This benchmark cannot run here; the message says why in one line."""


@dataclass
class BenchOutput:
    config: dict  # everything needed to rerun it
    metrics: dict[str, float]  # flat dict of numbers, names as in BENCHMARKS.md
    baseline: str  # what it was compared against
    repeats: dict[str, list[float]] = field(default_factory=dict)  # every timed repeat, kept for the JSON


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 1, device: str = "cpu") -> list[float]:
    """Wall-clock milliseconds of `fn()` for each repeat (after warm-up), synchronising CUDA if used."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))
