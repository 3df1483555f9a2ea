"""`muon-ad bench comm`: bytes communicated per training step, ZeRO-1 + compression vs plain fp32 DDP.

Setting. The distillation recipe (`muon_ad.recipes.distill`, the CPU preset: its student, AD-target bank and
curriculum at global batch 8, at half its length: 600 steps split 1:2:3 like distill-convergence's) on 2 gloo processes on this CPU, forked and joined through torch's env://
rendezvous as torchrun would, one thread each. Two runs, the same student init, data, pairs and steps:
- baseline: plain DDP, each step's fp32 gradients all-reduced (DDP's default, issued from Python so it is counted),
  Muon replicated on every rank;
- ours: DDP with PowerSGD (rank `powersgd_rank`, error feedback, plain all-reduce for the first
  `powersgd_start_step` steps) + ZeRO-1 Muon (`ShardedMuon`: each rank orthogonalises its own share of the
  matrices) whose parameter all-gather sends int8 updates with error feedback.

Counting, two ways. (1) `CommCounter` wraps torch.distributed's collectives on rank 0 and adds up the bytes it sends
(ring schedule) over the measured window; every collective of the training step goes through it, the per-step
loss all-reduce included. (2) The loopback interface's transmitted bytes (/proc/net/dev) over the same window,
divided by the 2 ranks: what really crossed the wire, TCP/IP framing included, and anything else on this machine
that used loopback meanwhile (other processes: noise, reported, not subtracted). The window is steps 1 to N−1
(step 0 is DDP's first, which rebuilds its buckets; the validations at 0 and N are outside it).

Metrics: bytes_per_step_baseline / bytes_per_step (counted, per rank), reduction = 1 − ours / baseline;
final_loss_ratio = ours / baseline final validation loss (the held-out L1 to the AD targets, EMA weights);
step_time_ratio = ours / baseline mean seconds per step over the window. The loopback figures are in
`repeats`. Goal (BENCHMARKS.md): reduction ≥ 0.80 with final_loss_ratio ≤ 1.05.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench.common import BenchOutput, BenchUnavailable, require_teacher
from muon_ad.config import to_dict
from muon_ad.recipes.distill import DistillConfig, distill
from muon_ad.training import distributed
from muon_ad.training.comm_hooks import CommCounter, loopback_bytes

WORLD = 2
WORK = Path("runs/bench-comm")


@dataclass
class Settings:
    steps: tuple[int, int, int] = (100, 200, 300)  # the CPU preset's curriculum at half length (as distill-convergence)
    images: int = 256
    val_pairs: int = 32
    target_pairs: int = 448
    target_steps: int = 25
    fid_feature_steps: int = 20  # FID is not what this benchmark measures
    powersgd_rank: int = 4  # rank 1: 84.0 % fewer bytes but final loss 1.082x; rank 4: 80.4 %, 1.026x (README)
    powersgd_start_step: int = 10


FULL = Settings()
# A smoke run: PowerSGD starts at step 2 so that its warm-up does not dominate 24 steps.
QUICK = Settings(steps=(8, 8, 8), images=16, val_pairs=4, target_pairs=8, target_steps=2, fid_feature_steps=2,
                 powersgd_start_step=2)
RUNS = {
    "baseline": {},
    "ours": {"optimizer.zero1": True, "optimizer.zero1_gather": "int8", "distributed.grad_compression": "powersgd"},
}


def bench_config(settings: Settings, name: str, out: Path) -> DistillConfig:
    cfg = DistillConfig()  # the CPU preset (configs/stylize-cpu.yaml)
    for (_, phase), steps in zip(cfg.curriculum.phases(), settings.steps):
        phase.steps = steps
    cfg.data.content_count = cfg.data.style_count = settings.images
    cfg.data.val_pairs = settings.val_pairs
    cfg.distill.target_pairs, cfg.distill.target_steps = settings.target_pairs, settings.target_steps
    cfg.distill.target_path = str(out / "ad-targets.safetensors")  # made by the first run, read by the second
    total = cfg.curriculum.total_steps
    cfg.validation.every = cfg.train.checkpoint_every = total  # validated at 0 and N, one checkpoint at the end
    cfg.validation.fid_feature_steps = settings.fid_feature_steps
    cfg.train.out_dir, cfg.train.teacher = str(out / name), DEFAULT_TEACHER
    cfg.distributed.powersgd_rank = settings.powersgd_rank
    cfg.distributed.powersgd_start_step = settings.powersgd_start_step
    for key, value in RUNS[name].items():
        section, field = key.split(".")
        setattr(getattr(cfg, section), field, value)
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(local_rank: int, cfg: DistillConfig, port: int) -> None:
    """One of the 2 processes: the recipe, with rank 0 counting bytes and time over steps 1 … N−1."""
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    total, counter, window = cfg.curriculum.total_steps, CommCounter(), {}

    def measure(plan, student, optimizer):
        if plan.step == 1:
            counter.start()
            window.update(loopback=loopback_bytes(), time=time.perf_counter())
        elif plan.step == total - 1:
            counter.stop()
            lo = loopback_bytes()
            window.update(bytes=counter.bytes, calls=counter.calls, seconds=time.perf_counter() - window["time"],
                          loopback=None if lo is None or window["loopback"] is None else lo - window["loopback"])

    distill(cfg, hooks=[measure])
    if distributed.is_main_process():
        Path(cfg.train.out_dir, "comm.json").write_text(json.dumps({**window, "steps": total - 2}))
    distributed.teardown()


def measure_run(cfg: DistillConfig) -> dict:
    out = Path(cfg.train.out_dir)
    if out.exists():
        shutil.rmtree(out)  # a fresh run, not a resumed one
    mp.start_processes(_rank, args=(cfg, _free_port()), nprocs=WORLD, start_method="fork")
    window = json.loads((out / "comm.json").read_text())
    with open(out / "val.csv") as f:
        window["final_loss"] = float(f.read().strip().splitlines()[-1].split(",")[1])
    return window


def run(quick: bool, device: str) -> BenchOutput:
    if device != "cpu":
        raise BenchUnavailable("comm runs 2 gloo processes on the CPU; NCCL on one GPU would not be a distributed run")
    require_teacher(DEFAULT_TEACHER)
    if loopback_bytes() is None:
        raise BenchUnavailable("comm: /proc/net/dev has no loopback counters here")
    settings, work = (QUICK, WORK / "quick") if quick else (FULL, WORK)  # each its own bank of AD targets
    results = {name: measure_run(bench_config(settings, name, work)) for name in RUNS}
    base, ours = results["baseline"], results["ours"]
    per_step = {name: r["bytes"] / r["steps"] for name, r in results.items()}
    wire = {name: r["loopback"] / r["steps"] / WORLD for name, r in results.items()}
    metrics = {
        "bytes_per_step_baseline": per_step["baseline"],
        "bytes_per_step": per_step["ours"],
        "reduction": 1 - per_step["ours"] / per_step["baseline"],
        "final_loss_ratio": ours["final_loss"] / base["final_loss"],
        "step_time_ratio": (ours["seconds"] / ours["steps"]) / (base["seconds"] / base["steps"]),
    }
    repeats = {
        "loopback_bytes_per_step_baseline": [wire["baseline"]],
        "loopback_bytes_per_step": [wire["ours"]],
        "loopback_reduction": [1 - wire["ours"] / wire["baseline"]],
        "final_loss_baseline": [base["final_loss"]],
        "final_loss": [ours["final_loss"]],
        "seconds_per_step_baseline": [base["seconds"] / base["steps"]],
        "seconds_per_step": [ours["seconds"] / ours["steps"]],
        "collective_calls_per_step_baseline": [base["calls"] / base["steps"]],
        "collective_calls_per_step": [ours["calls"] / ours["steps"]],
    }
    config = {"settings": vars(settings), "world_size": WORLD, "backend": "gloo", "measured_steps": base["steps"],
              "runs": RUNS, "recipe": to_dict(bench_config(settings, "ours", work))}
    return BenchOutput(config=config, metrics=metrics, repeats=repeats,
                       baseline="plain DDP (fp32 gradient all-reduce), replicated Muon; same student, data, steps")
