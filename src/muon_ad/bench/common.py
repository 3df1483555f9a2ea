"""What every benchmark returns (shared/BENCHMARKS.md is the contract).

A benchmark module exposes `run(quick: bool, device: str) -> BenchOutput`. The runner adds the name,
device, torch version and time, prints a table and writes the JSON. A benchmark that cannot run (no
GPU, no weights) raises `BenchUnavailable` with one clear line; it never returns a made-up value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from muon_ad.eval.profile import median, time_ms  # re-exported: benchmarks time things with these


class BenchUnavailable(RuntimeError):
    """This benchmark cannot run here; the message says why in one line."""


@dataclass
class BenchOutput:
    config: dict  # everything needed to rerun it
    metrics: dict[str, float]  # flat dict of numbers, names as in BENCHMARKS.md
    baseline: str  # what it was compared against
    repeats: dict[str, list[float]] = field(default_factory=dict)  # every timed repeat, kept for the JSON
