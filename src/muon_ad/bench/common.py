"""What every benchmark returns (shared/BENCHMARKS.md is the contract), and what several benchmarks share.

A benchmark module exposes `run(quick: bool, device: str) -> BenchOutput`. The runner adds the name,
device, torch version and time, prints a table and writes the JSON. A benchmark that cannot run (no
GPU, no weights) raises `BenchUnavailable` with one clear line; it never returns a made-up value.

Shared inputs: the teacher check, one fixed procedural (content, style) pair, the student to measure
(the trained one if there is one, else a fresh one of the default architecture) and the student's stream
workload (a module-level function, so it pickles into the fresh process that measures peak memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from muon_ad.data.procedural import make_scene, make_texture
from muon_ad.eval.profile import median, time_ms  # re-exported: benchmarks time things with these
from muon_ad.runtime.backends import TorchStudent, default_student

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


def student_backend(student: str | Path | None, device: str = "cpu") -> TorchStudent:
    """A saved student, or (None) a freshly initialised one of the default architecture: speed and memory
    depend on the architecture, not on the weights."""
    from muon_ad.models.student import Student, StudentConfig, load_student

    if student is not None:
        return TorchStudent(load_student(student), device)
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
