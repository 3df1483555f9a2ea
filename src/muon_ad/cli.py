"""`muon-ad <command>`: the command line.

Each command imports its heavy modules (torch, diffusers) only when it runs, so `--help` is instant.
A `UserError` (bad config key, missing file, ...) is printed as one line with exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from muon_ad import DEFAULT_TEACHER
from muon_ad.errors import UserError

app = typer.Typer(
    help="Muon-AD: attention distillation from a latent diffusion teacher, accelerated by Muon, for real-time synthesis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Overrides = typer.Argument(None, help="Dotted overrides of config keys, e.g. train.unet_steps=2000", show_default=False)


@app.command("train-teacher")
def train_teacher_command(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/teacher-tiny.yaml"),
    overrides: Optional[list[str]] = Overrides,
) -> None:
    """Train the built-in tiny teacher LDM on procedural data (resumes from its last checkpoint)."""
    from muon_ad.config import load_config
    from muon_ad.recipes.train_teacher import TrainTeacherConfig, train_teacher

    cfg = load_config(TrainTeacherConfig, config, overrides or [])
    folder = train_teacher(cfg)
    typer.echo(f"teacher: {folder}\nsamples: {Path(cfg.train.out_dir) / 'samples.png'}")


@app.command("sample")
def sample_command(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Text prompt; repeat for several images."),
    teacher: str = typer.Option(DEFAULT_TEACHER, help="Diffusers SD-layout folder (SD-1.5 or the built-in tiny teacher)."),
    steps: int = typer.Option(30, help="DDIM steps."),
    guidance: float = typer.Option(3.0, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("samples.png"), help="Output PNG (a labelled grid when there are several prompts)."),
) -> None:
    """Draw images from a teacher with DDIM and save them as one PNG."""
    from muon_ad.data.images import save_image_atomic
    from muon_ad.models.teacher import load_teacher
    from muon_ad.visual import image_grid

    model = load_teacher(teacher)
    images = model.sample(prompt, steps=steps, guidance_scale=guidance, seed=seed)
    picture = image_grid(images, prompt, scale=1) if len(prompt) > 1 else images[0]
    save_image_atomic(picture, out)
    typer.echo(f"wrote {out}")


@app.command("bench")
def bench_command(
    name: str = typer.Argument(..., help="Benchmark name (see shared/BENCHMARKS.md), e.g. muon-step"),
    quick: bool = typer.Option(False, "--quick", help="Small size that finishes in under a minute on 2 CPU cores."),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    out: Optional[Path] = typer.Option(None, help="JSON output (default bench-results/NAME.json)."),
) -> None:
    """Run a benchmark side by side with its baseline; print a table and write JSON."""
    from muon_ad.bench.common import BenchUnavailable
    from muon_ad.bench.runner import run_benchmark

    try:
        run_benchmark(name, quick=quick, device=device, out=out)
    except BenchUnavailable as error:
        raise UserError(f"benchmark cannot run here: {error}") from None


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # silence optional-dependency chatter
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        app()
    except UserError as error:
        typer.echo(f"muon-ad: error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("muon-ad: interrupted", err=True)
        sys.exit(130)
