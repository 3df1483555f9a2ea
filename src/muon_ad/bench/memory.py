"""`muon-ad bench memory`: peak memory of the teacher's path vs the student's, at one resolution.

Each workload runs in a fresh Python process (`peak_memory_mb`), so one workload's peak cannot hide
another's and nothing this process did before counts. On CPU the figure is the whole process's peak
RSS: interpreter, libraries, weights, activations, i.e. what a deployment must provision. A process that
only imports torch is measured too (`process_baseline_mb`), so the share of each figure that is the
runtime itself is visible. On CUDA it is the peak of tensor memory allocated on the GPU.

Workloads (module-level functions, so they pickle into the child process; they import the
model libraries themselves, so this module stays light for the empty-process baseline):
- teacher: optimisation-based AD style transfer, the path the student replaces (a few steps: every step
  is the same computation, so the peak is reached in the first);
- teacher sampling: DDIM text-to-image generation (what the paper's 7 GB figure is about);
- student: stylising frames at the resolution, style encoded once, as `muon-ad stream` does.
- quantised student: the same frames through the int8 ONNX Runtime export (`muon-ad export --precision int8`),
  made in this process first; the child process loads the export folder and runs it.
"""

from __future__ import annotations

import functools
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench.common import SEED, BenchOutput, require_teacher, sample_pair, student_workload, trained_student
from muon_ad.eval.profile import peak_memory_mb

def teacher_ad_workload(teacher: str | Path, resolution: int, steps: int, device: str) -> None:
    from muon_ad.models.teacher import load_teacher
    from muon_ad.synthesis import stylize

    content, style = sample_pair(resolution)
    stylize(load_teacher(teacher, device=device), content, style, steps=steps, size=resolution, progress=False)


def teacher_sampling_workload(teacher: str | Path, resolution: int, steps: int, device: str) -> None:
    from muon_ad.models.teacher import load_teacher

    model = load_teacher(teacher, device=device)
    pipe = model.pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe(["blue and orange stripes"], num_inference_steps=steps, height=resolution, width=resolution,
         generator=torch.Generator(device).manual_seed(SEED), output_type="pt")


def _nothing() -> None:
    """The empty workload: a fresh process with torch imported (the model libraries are imported by the
    workloads that use them, so this is the floor every figure stands on)."""


def measure(teacher: str | Path, student: str | Path | None, resolution: int, device: str) -> BenchOutput:
    require_teacher(teacher)
    cuda = device.startswith("cuda")
    workloads = {
        "teacher_peak_mb": functools.partial(teacher_ad_workload, teacher, resolution, 2, device),
        "teacher_sampling_peak_mb": functools.partial(teacher_sampling_workload, teacher, resolution, 2, device),
        "student_peak_mb": functools.partial(student_workload, student, resolution, 3, device),
    }
    if not cuda:
        workloads["process_baseline_mb"] = _nothing
        from muon_ad.bench.quant import deployed_students  # ONNX export and ORT: only for this workload

        exports = tempfile.TemporaryDirectory(prefix="bench-memory-")
        folders, _ = deployed_students(student, Path(exports.name), resolution, edge=False)
        workloads["quant_peak_mb"] = functools.partial(student_workload, folders["int8"], resolution, 3, device)
    # CPU peaks are per child process, so the children can run side by side (most of their time is
    # importing torch); CUDA peaks are read in this process, one workload at a time.
    with ThreadPoolExecutor(max_workers=1 if cuda else len(workloads)) as pool:
        futures = {key: pool.submit(peak_memory_mb, fn, device) for key, fn in workloads.items()}
        metrics: dict[str, float] = {key: future.result() for key, future in futures.items()}
    if not cuda:
        exports.cleanup()
    metrics["resolution"] = resolution
    metrics["teacher_to_student_ratio"] = metrics["teacher_peak_mb"] / metrics["student_peak_mb"]
    what = "peak tensor memory on the GPU" if device.startswith("cuda") else "peak RSS of a fresh process per workload"
    config = {"teacher": str(teacher), "student": str(student) if student else "fresh default StudentConfig()",
              "resolution": resolution, "device": device, "measured": what, "seed": SEED,
              "workloads": {"teacher": "AD style transfer (synthesis.stylize), 2 steps",
                            "teacher_sampling": "DDIM sampling, 2 steps, batch 1", "student": "3 frames via Stylizer",
                            "quant": "3 frames via Stylizer, int8 ONNX Runtime export (cpu only)"}}
    baseline = (f"teacher ({what}) doing optimisation-based AD style transfer and DDIM sampling at the same "
                f"{resolution} px; the fp32 torch student beside the int8 ONNX Runtime one (quant_peak_mb, cpu)")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline)


def run(quick: bool, device: str) -> BenchOutput:
    return measure(DEFAULT_TEACHER, trained_student(), 128 if quick else 256, device)
