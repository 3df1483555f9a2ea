"""`muon-ad bench NAME`: run one benchmark, print its table, write its JSON (shared/BENCHMARKS.md)."""

from __future__ import annotations

import importlib
import json
import math
import time
from pathlib import Path

import torch

from muon_ad.bench import BENCHMARKS
from muon_ad.bench.common import BenchOutput, BenchUnavailable
from muon_ad.io import write_text_atomic
from muon_ad.errors import UserError


def run_benchmark(name: str, quick: bool, device: str, out: str | Path | None = None) -> dict:
    """Run benchmark `name` and return the JSON record it wrote (to `out`, default bench-results/NAME.json)."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark '{name}'; choose from {', '.join(BENCHMARKS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchUnavailable(f"{name}: --device {device} asked for, but no CUDA GPU is available here")
    result: BenchOutput = importlib.import_module(BENCHMARKS[name]).run(quick=quick, device=device)
    record = {
        "name": name,
        "quick": quick,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name(),
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": result.config,
        "metrics": result.metrics,
        "baseline": result.baseline,
        "repeats": result.repeats,
    }
    path = Path(out or f"bench-results/{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(_finite_or_null(record), indent=2))
    print(format_table(record))
    print(f"wrote {path}")
    return record


def _finite_or_null(value: object) -> object:
    """NaN/inf (e.g. a ratio with no scale to measure against) as JSON null: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def format_table(record: dict) -> str:
    width = max(len(k) for k in record["metrics"]) + 2
    lines = [f"{record['name']} ({'quick' if record['quick'] else 'full'}, {record['device']}, {record['device_name']})",
             f"baseline: {record['baseline']}"]
    lines += [f"  {k:<{width}}{_fmt(v)}" for k, v in record["metrics"].items()]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return "cpu"
