"""What every benchmark returns (shared/BENCHMARKS.md is the contract), and what several benchmarks share.

A benchmark module exposes `run(quick: bool, device: str) -> BenchOutput`. The runner adds the name,
device, torch version and time, prints a table and writes the JSON. A benchmark that cannot run (no
GPU, no weights) raises `BenchUnavailable` with one clear line; it never returns a made-up value.

Shared inputs: the teacher check, one fixed procedural (content, style) pair, the student to measure
(the trained one if there is one, else a fresh one of the default architecture), the student's stream
workload (a module-level function, so it pickles into the fresh process that measures peak memory), and
the teacher's seconds per AD image composed from timed steps (`teacher_ad_seconds`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from muon_ad.data.procedural import make_scene, make_texture
from muon_ad.eval.profile import median, time_ms  # re-exported: benchmarks time things with these
from muon_ad.models.teacher import Teacher
from muon_ad.runtime.backends import StudentBackend, TorchStudent, default_student, load_backend
from muon_ad.synthesis import ADObjective, ddim_timesteps, optimize_latent
from muon_ad.synthesis.transfer import CONTENT_WEIGHT, STYLIZE_STEPS, image_batch

SEED = 12345  # not the teacher's data seed: the images are new to every model


class BenchUnavailable(RuntimeError):
    """This benchmark cannot run here; the message says why in one line."""


@dataclass
class BenchOutput:
    config: dict  # everything needed to rerun it
    metrics: dict[str, float]  # flat dict of numbers, names as in BENCHMARKS.md
    baseline: str  # what it was compared against
    repeats: dict[str, list[float]] = field(default_factory=dict)  # every timed repeat, kept for the JSON


def require_teacher(teacher: str | Path) -> None:
    if not (Path(teacher) / "unet").is_dir():
        raise BenchUnavailable(f"no teacher at {teacher}: run muon-ad train-teacher configs/teacher-tiny.yaml")


def sample_pair(resolution: int) -> tuple[Image.Image, Image.Image]:
    """A procedural (content, style) pair at `resolution`, the same for every benchmark run."""
    rng = np.random.default_rng(SEED)
    content, _ = make_scene(resolution, rng, "landscape")
    return Image.fromarray(content), Image.fromarray(make_texture("stripes", "blue_orange", resolution, rng))


def trained_student() -> Path | None:
    """The student `muon-ad distill` saved, if there is one (its architecture is what deployment runs)."""
    folder = default_student()
    return folder if (folder / "config.json").is_file() else None


def student_backend(student: str | Path | None, device: str = "cpu") -> StudentBackend:
    """A saved student (torch) or exported one (ONNX Runtime), or (None) a freshly initialised one of the default
    architecture: speed and memory depend on the architecture, not on the weights. ONNX Runtime gets as many
    threads as torch has, so the two are timed alike."""
    from muon_ad.models.student import Student, StudentConfig

    if student is not None:
        return load_backend(student, device, threads=torch.get_num_threads())
    torch.manual_seed(SEED)
    return TorchStudent(Student(StudentConfig()), device)


def student_workload(student: str | Path | None, resolution: int, frames: int, device: str) -> None:
    """Stylise `frames` frames of the sample pair as `muon-ad stream` does (style encoded once)."""
    from muon_ad.data.images import to_tensor
    from muon_ad.runtime.stylizer import Stylizer

    content, style = sample_pair(resolution)
    stylizer = Stylizer(student_backend(student, device), to_tensor(style))
    for _ in range(frames):
        stylizer(to_tensor(content))


def teacher_ad_seconds(teacher: Teacher, resolution: int, timed_steps: int, device: str) -> dict:
    """Seconds per image of AD style transfer (STYLIZE_STEPS steps), from timed steps and one-off costs."""
    content, style = sample_pair(resolution)
    with torch.no_grad():
        encode_ms = time_ms(lambda: teacher.encode_images(image_batch(content, (resolution, resolution))), 3, 1, device)
        content_latent = teacher.encode_images(image_batch(content, (resolution, resolution)))
        style_latent = teacher.encode_images(image_batch(style, (resolution, resolution)))
        decode_ms = time_ms(lambda: teacher.decode_latents(content_latent), 3, 1, device)
    objective = ADObjective(teacher, style_latent, content_latent, CONTENT_WEIGHT)
    # The first `timed_steps` + 1 timesteps of the real schedule; step 0 is warm-up.
    timesteps = ddim_timesteps(teacher, STYLIZE_STEPS)[: timed_steps + 1]
    stamps = [time.perf_counter()]

    def stamp(row: dict, latent: torch.Tensor) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    optimize_latent(objective, content_latent, timesteps, "adam", progress=False, on_step=stamp)
    step_ms = [(b - a) * 1000.0 for a, b in zip(stamps[1:], stamps[2:])]
    once_ms = 2 * median(encode_ms) + median(decode_ms)  # content and style encoded, result decoded
    return {"seconds": (STYLIZE_STEPS * median(step_ms) + once_ms) / 1000.0, "step_ms": step_ms,
            "encode_ms": encode_ms, "decode_ms": decode_ms}
