"""Muon-AD: Muon-accelerated attention distillation for real-time synthesis from a latent diffusion teacher."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__version__ = "0.1.0"

# Where `muon-ad train-teacher configs/teacher-tiny.yaml` saves the built-in teacher; commands default to it.
DEFAULT_TEACHER = "runs/teacher-tiny/teacher"
# Where `muon-ad distill` writes its run by default; the student it trains is DEFAULT_DISTILL_DIR/student.
DEFAULT_DISTILL_DIR = "runs/stylize-cpu"
DEFAULT_STUDENT = f"{DEFAULT_DISTILL_DIR}/student"
# Classifier-free guidance of text-to-image sampling everywhere (sample, guided sampling, benchmarks).
DEFAULT_GUIDANCE_SCALE = 3.0

# The folder the default artefacts (runs/...) are looked for in when the current folder has none. Unset, it is the
# source checkout this package runs from (an editable install: where `make demo` put them), if there is one.
HOME_ENV = "MUON_AD_HOME"
# Where other runs leave the same kind of artefact: `muon-ad demo --quick` (and older demos) keep theirs in the report.
_ELSEWHERE = {DEFAULT_TEACHER: ("demo-report/teacher/teacher",), DEFAULT_STUDENT: ("demo-report/distill/muon/student",)}


def artefact_roots() -> list[Path]:
    """The folders a default artefact path is relative to, in the order they are tried."""
    home = os.environ.get(HOME_ENV)
    if home is None:
        checkout = Path(__file__).resolve().parents[2]  # src/muon_ad/__init__.py -> the checkout
        home = str(checkout) if (checkout / "pyproject.toml").is_file() else ""
    return [Path.cwd()] + ([Path(home).expanduser()] if home else [])


def default_path(relative: str) -> Path:
    """`relative` (DEFAULT_TEACHER, DEFAULT_STUDENT) under the first root that has it, else under the current folder
    (where the command that makes it writes it). Why not only the current folder: `make demo` trains the built-in
    artefacts in the checkout, and a user who then works in another folder should not train them again."""
    for root in artefact_roots():
        if (root / relative).exists():
            return root / relative
    return Path(relative)


def missing_hint(relative: str, option: str) -> str:
    """What to say when a default artefact is missing: where a run left one (`--teacher X` works at once), or how to
    make it."""
    for root in artefact_roots():
        for other in _ELSEWHERE.get(relative, ()):
            if (root / other / "config.json").is_file() or (root / other / "unet").is_dir():
                return f"found one at {root / other}: pass {option} {root / other}"
    make = {DEFAULT_TEACHER: "muon-ad train-teacher configs/teacher-tiny.yaml (about 13 min on 2 cores) or make demo",
            DEFAULT_STUDENT: "muon-ad distill configs/stylize-cpu.yaml (about 5 min) or make demo"}.get(relative)
    where = " or ".join(str(root) for root in artefact_roots())
    return f"looked in {where}; make it with: {make}; or set {HOME_ENV} to the folder holding runs/" if make else ""

# torchao (for QAT, compress.qat) is imported by diffusers whenever it is installed, and then logs at import time
# that its CUDA kernels and Triton are absent and that torch's pytree registers its enums natively: noise on
# every command's stderr, where a user error must be one line. Errors still come through.
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)
