"""`muon-ad bench realtime`: the student's stylisation throughput vs the teacher's path to the same image.

Student: frames per second of the streaming path (`runtime.Stylizer`: batch 1, style encoded once, no
change skipping) at `resolution`, the median over repeats after warm-up, with every thread torch has.

Teacher: seconds per image of optimisation-based AD style transfer at the same resolution, the
published recipe (200 DDIM timesteps, one Adam step each). Running all 200 steps at 256 px would take
the better part of an hour on 2 CPU cores, so the figure is composed from measured parts: the median
time of one AD step (the real `optimize_latent` loop, timed step by step) times 200, plus the measured
one-off costs (encoding content and style, decoding the result). Every step is the same computation
(three UNet passes; only the timestep value differs), so the composition is linear by construction;
the step times are in the JSON. speedup = teacher seconds per image × student FPS.

Generation: seconds per image of DDIM text-to-image sampling (30 steps, classifier-free guidance) at
the teacher's own resolution: the paper's "s/image" figure.

Peak memory of the student's stream workload: `bench.memory` (fresh process; RSS on CPU, GPU tensors on CUDA).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench.common import (
    BenchOutput,
    require_teacher,
    sample_pair,
    student_backend,
    student_workload,
    teacher_ad_seconds,
    trained_student,
)
from muon_ad.compress.prune import EDGE_ATTENTION_BLOCKS, EDGE_KEEP
from muon_ad.data.images import to_tensor
from muon_ad.eval.profile import measure_latency, peak_memory_mb
from muon_ad.models.teacher import Teacher, load_teacher
from muon_ad.runtime.stylizer import Stylizer
from muon_ad.synthesis.transfer import STYLIZE_STEPS

SAMPLING_STEPS = 30


def student_fps(student: str | Path | None, resolution: int, repeats: int, device: str) -> dict:
    content, style = (to_tensor(image) for image in sample_pair(resolution))
    stylizer = Stylizer(student_backend(student, device), style)
    return measure_latency(lambda: stylizer(content), repeats=repeats, warmup=2, device=device)


def deployed_fps(student: str | Path | None, resolution: int, repeats: int) -> dict:
    """FPS of the ORT int8 student and the pruned + int8 edge student, at `resolution` and
    at 512 px, beside the torch fp32 student at 512 px."""
    from muon_ad.bench.quant import deployed_students

    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as root:
        folders, notes = deployed_students(student, Path(root), 64)
        metrics: dict = {"student_fps_512": student_fps(student, 512, repeats, "cpu")["fps"], "notes": notes}
        for name, key in (("int8", "student_fps_int8"), ("edge", "student_fps_edge")):
            for size, suffix in ((resolution, ""), (512, "_512")):
                metrics[key + suffix] = student_fps(folders[name], size, repeats, "cpu")["fps"]
    return metrics


def generation_seconds(teacher: Teacher, repeats: int, warmup: int, device: str) -> dict:
    timing = measure_latency(lambda: teacher.sample(["blue and orange stripes"], steps=SAMPLING_STEPS, seed=0),
                             repeats=repeats, warmup=warmup, device=device)
    return {"seconds": timing["median_ms"] / 1000.0, "repeats_ms": timing["repeats_ms"]}


def measure(
    teacher_path: str | Path, student: str | Path | None, resolution: int, quick: bool, device: str, peak: bool = True,
) -> BenchOutput:
    """The benchmark at `resolution`; `peak=False` skips the student's peak memory (when `bench.memory` runs too)."""
    require_teacher(teacher_path)
    teacher = load_teacher(teacher_path, device=device)
    # Quick: fewer repeats, and the warm-up of the AD loop (its first step) is the only one it gets.
    fps = student_fps(student, resolution, repeats=5 if quick else 30, device=device)
    deployed = deployed_fps(student, resolution, repeats=5 if quick else 30) if device == "cpu" else {}
    ad = teacher_ad_seconds(teacher, resolution, timed_steps=1 if quick else 5, device=device)
    generation = generation_seconds(teacher, repeats=1 if quick else 3, warmup=0 if quick else 1, device=device)
    metrics = {
        "student_fps": fps["fps"],
        "student_ms": fps["median_ms"],
        "teacher_seconds_per_image": ad["seconds"],
        "speedup": ad["seconds"] * fps["fps"],
        "generation_seconds_per_image": generation["seconds"],
        "resolution": resolution,
        **{key: value for key, value in deployed.items() if key != "notes"},
    }
    if peak:
        workload = functools.partial(student_workload, student, resolution, 3, device)
        metrics["peak_gpu_mb" if device.startswith("cuda") else "peak_rss_mb"] = peak_memory_mb(workload, device=device)
    config = {"teacher": str(teacher_path), "student": str(student) if student else "fresh default StudentConfig()",
              "resolution": resolution, "ad_steps": STYLIZE_STEPS, "ad_optimizer": "adam", "timed_ad_steps": len(ad["step_ms"]),
              "generation_steps": SAMPLING_STEPS, "generation_resolution": teacher.image_size,
              "threads": torch.get_num_threads(), "batch": 1,
              "deployed": "ONNX Runtime, as many intra-op threads as torch has; int8 = muon-ad export --precision "
                          f"int8 (conv-only QDQ); edge = pruned (keep {EDGE_KEEP}, {EDGE_ATTENTION_BLOCKS} "
                          "transformer block(s), entropy) + int8",
              "deployed_notes": deployed.get("notes", "cuda run: ORT students not measured")}
    repeats = {"student_ms": fps["repeats_ms"], "teacher_ad_step_ms": ad["step_ms"], "teacher_encode_ms": ad["encode_ms"],
               "teacher_decode_ms": ad["decode_ms"], "generation_ms": generation["repeats_ms"]}
    baseline = (f"optimisation-based AD style transfer with the same teacher at {resolution} px "
                f"({STYLIZE_STEPS} Adam steps: median timed step x {STYLIZE_STEPS} + encode/decode)")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline, repeats=repeats)


def run(quick: bool, device: str) -> BenchOutput:
    return measure(DEFAULT_TEACHER, trained_student(), 128 if quick else 256, quick, device)
