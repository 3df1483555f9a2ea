"""Cost of a model: parameters, FLOPs, latency / FPS and peak memory.

FLOPs come from `torch.utils.flop_counter` (a multiply-add counts as 2 FLOPs; only matmul/conv/attention
kernels are counted, so elementwise ops and bias adds are not). Timing reports the median over repeats,
since these machines are shared and single timings drift (shared/BENCHMARKS.md).

Peak memory on CPU is the peak resident set size (RSS) of a *fresh* Python process that runs the
workload. A process's peak only ever grows, so measuring in the caller would report whatever it did
before; a fresh process gives one honest peak per workload. By default the figure is the whole process
(interpreter, torch runtime, weights, activations: what a deployment would need); with
`subtract_baseline=True` it is only the growth above the RSS just before the call. On CUDA it is
`torch.cuda.max_memory_allocated` around the call, in process (tensor memory, not the CUDA context).
"""

from __future__ import annotations

import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from muon_ad.errors import UserError


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


BLOCK = 10  # consecutive frames per timed block in `interleaved_ms`


def interleaved_ms(calls: dict[str, Callable[[], object]], repeats: int, block: int = BLOCK) -> dict[str, list[float]]:
    """Milliseconds of each call, timed in `repeats // block` rounds of `block` consecutive calls (one round of
    `repeats` calls when `repeats` < `block`), each block after one warm-up call, the calls' blocks taking turns.
    Consecutive calls are how a stream runs a model (warm caches and threads); the turns let a drift of a shared
    machine's speed reach every call alike. Taking turns call by call instead cost small ONNX Runtime graphs up to
    half again their time, cold behind the others."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, repeats // block)):
        for name, call in calls.items():
            times[name] += time_ms(call, repeats=min(block, repeats), warmup=1)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, *inputs, **kwargs) -> int:
    """FLOPs of one forward pass `model(*inputs, **kwargs)`."""
    with FlopCounterMode(display=False) as counter:
        model(*inputs, **kwargs)
    return counter.get_total_flops()


def measure_latency(
    fn: Callable[[], object], repeats: int = 20, warmup: int = 3, device: str = "cpu", items_per_call: int = 1
) -> dict:
    """Median wall-clock latency of `fn()` and the throughput it implies (items_per_call, e.g. a batch size)."""
    times = time_ms(fn, repeats, warmup, device)
    median_ms = median(times)
    return {"median_ms": median_ms, "fps": items_per_call * 1000.0 / median_ms, "repeats_ms": times}


# Runs in the fresh process. VmHWM (Linux) is the peak RSS of this process image only; ru_maxrss is not
# used there because the kernel seeds it with the parent's RSS at exec, so a child of a big process
# would report the parent's size. Writing 5 to clear_refs resets VmHWM to the current RSS.
_CHILD = r"""
import pickle, sys

def status_mb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024

fn = pickle.loads(sys.stdin.buffer.read())
if sys.argv[1] == "delta":
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_mb("VmRSS")
    fn()
    print(status_mb("VmHWM") - before)
else:
    fn()
    print(status_mb("VmHWM"))
"""


def peak_memory_mb(fn: Callable[[], object], device: str = "cpu", subtract_baseline: bool = False) -> float:
    """Peak memory in MiB while running `fn()` (see the module docstring for what is counted).

    On CPU (Linux) `fn` is pickled into a fresh Python process, so it must be a module-level function or
    a `functools.partial` of one; its arguments (e.g. a model) are loaded before the baseline is read.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return (peak - before if subtract_baseline else peak) / 2**20
    if not os.path.exists("/proc/self/status"):
        raise UserError("peak RSS is measured through /proc (Linux only); measure on CUDA or on Linux")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))  # so the child can import fn's module
    mode = "delta" if subtract_baseline else "peak"
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], input=pickle.dumps(fn), capture_output=True, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"peak-memory child process failed: {result.stderr.decode().strip()[-2000:]}")
    return float(result.stdout.decode().split()[-1])
