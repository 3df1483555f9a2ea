"""`muon-ad <command>`: the command line.

Each command imports its heavy modules (torch, diffusers) only when it runs, so `--help` is instant.
A `UserError` (bad config key, missing file, ...) is printed as one line with exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer
from typer.exceptions import TyperException

from muon_ad import DEFAULT_GUIDANCE_SCALE, DEFAULT_STUDENT, DEFAULT_TEACHER, checks, default_path, missing_hint
from muon_ad.bench import BENCHMARKS
from muon_ad.errors import UserError

app = typer.Typer(
    help="Muon-AD: attention distillation from a latent diffusion teacher, accelerated by Muon, for real-time synthesis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

AD_OPTIMIZERS = ("adam", "muon")  # muon_ad.synthesis.OPTIMIZERS, named here so --help need not import torch
AD_DEFAULTS = {"--optimizer": "adam", "--steps": 200, "--content-weight": 0.25}  # stylize's AD options, as published
# The student's activations at one pixel of its input, with headroom: about 80 floats at base 32, stem stride 4.
STUDENT_BYTES_PER_PIXEL = 200
# AD's working short side when none is given: the content's own, capped at the teacher's training size or this,
# whichever is larger. At the built-in teacher's 48 px a photo's content is gone; at 128 px it stays recognisable
# and 200 steps take about 30 s on one thread (measured: see the README). SD-1.5 (512 px) keeps its 512.
AD_WORKING_SIDE = 128
# The student's frame size in `stream` when none is given: real time on a laptop CPU (`bench realtime` measures it).
STREAM_SIZE = 256
TeacherOption = typer.Option(None, help="Diffusers SD-layout folder (SD-1.5 or the built-in tiny teacher; default: "
                             f"{DEFAULT_TEACHER}, in this folder or ${{MUON_AD_HOME}}, see the README).", show_default=False)
Overrides = typer.Argument(None, help="Dotted overrides of config keys, e.g. train.unet_steps=2000", show_default=False)


def _config_file(config: Path) -> None:
    """A missing recipe is answered before its dataclasses (and torch) are imported; the rest is `load_config`'s."""
    if not config.is_file():
        raise UserError(f"config file not found: {config}")


@app.command("train-teacher")
def train_teacher_command(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/teacher-tiny.yaml"),
    overrides: Optional[list[str]] = Overrides,
) -> None:
    """Train the built-in tiny teacher LDM on procedural data (resumes from its last checkpoint)."""
    _config_file(config)
    from muon_ad.config import load_config
    from muon_ad.recipes.train_teacher import TrainTeacherConfig, train_teacher

    cfg = load_config(TrainTeacherConfig, config, overrides or [])
    folder = train_teacher(cfg)
    typer.echo(f"teacher: {folder}\nsamples: {Path(cfg.train.out_dir) / 'samples.png'}")
    if Path(folder) == Path(DEFAULT_TEACHER):
        typer.echo("how often its samples are the family and palette asked for: muon-ad bench teacher-quality")


@app.command("sample")
def sample_command(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Text prompt; repeat for several images."),
    teacher: Optional[str] = TeacherOption,
    steps: Optional[int] = typer.Option(None, help="Sampling steps (default: the folder's; 30 DDIM steps for a teacher, "
                                        "its few LCM steps for a `distill-t2i` student)."),
    guidance: Optional[float] = typer.Option(None, help=f"Classifier-free guidance scale (default: the folder's; "
                                             f"{DEFAULT_GUIDANCE_SCALE} for a teacher, 1 = none for a few-step student)."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("samples.png"), help="Output PNG (a labelled grid when there are several prompts)."),
    style: Optional[Path] = typer.Option(None, help="Style image: AD-guided sampling (AD optimiser steps on the latent after each DDIM step)."),
    optimizer: str = typer.Option("adam", help="AD optimiser with --style: adam or muon."),
    ad_iters: int = typer.Option(3, help="AD optimiser steps after each DDIM step (with --style)."),
    size: Optional[int] = typer.Option(None, help="Image height and width in pixels, a multiple of the teacher's "
                                       "(default: its training size, e.g. 512 for SD-1.5, 48 for the built-in one)."),
) -> None:
    """Draw images from a teacher (DDIM, or a few-step student's LCM) and save them as one PNG (with --style: AD-guided, plus its loss curve)."""
    _ad_options(30 if steps is None else steps, optimizer)
    if guidance is not None:
        checks.within("--guidance", guidance, 0)
    checks.within("--ad-iters", ad_iters, 0)
    _image_out(out)
    teacher = _teacher_folder(teacher)
    multiple, native = _teacher_geometry(teacher)
    if size is not None:
        checks.multiple_of("--size", [size], multiple)
        _fits((size, size), teacher)
    if style is not None:
        checks.image_file("--style", style)
    from muon_ad.data.images import load_rgb, save_image_atomic
    from muon_ad.models.teacher import load_teacher
    from muon_ad.visual import image_grid

    style_image = load_rgb(style) if style is not None else None  # bad input fails before the teacher loads
    model = load_teacher(teacher)
    model.check_prompts(prompt)
    steps = model.default_steps if steps is None else steps
    guidance = model.default_guidance if guidance is None else guidance
    typer.echo(f"sampling at {size or native}x{size or native} px")
    if style_image is None:
        images = model.sample(prompt, steps=steps, guidance_scale=guidance, seed=seed, size=size)
    else:
        from muon_ad.synthesis import guided_sample, save_loss_curve

        images, history = guided_sample(model, prompt, style_image, steps, guidance, seed, ad_iters, optimizer, size=size)
        typer.echo("loss curve: " + ", ".join(map(str, save_loss_curve(history, out, "AD-guided sampling"))))
    picture = image_grid(images, prompt, scale=1) if len(prompt) > 1 else images[0]
    save_image_atomic(picture, out)
    typer.echo(f"wrote {out}")


@app.command("bench")
def bench_command(
    name: str = typer.Argument(..., help=f"Benchmark name (shared/BENCHMARKS.md): {', '.join(BENCHMARKS)}"),
    quick: bool = typer.Option(False, "--quick", help="Small size that finishes in under a minute on 2 CPU cores."),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    out: Optional[Path] = typer.Option(None, help="JSON output (default bench-results/NAME.json)."),
) -> None:
    """Run a benchmark side by side with its baseline; print a table and write JSON."""
    from muon_ad.bench.common import BenchUnavailable
    from muon_ad.bench.runner import run_benchmark

    checks.device("--device", device)
    if out is not None:
        checks.writable_output("--out", out)
    try:
        run_benchmark(name, quick=quick, device=device, out=out)
    except BenchUnavailable as error:
        raise UserError(f"benchmark cannot run here: {error}") from None


def _png(out: Path) -> Path:
    """Synthesis outputs are PNG (lossless); checked, and that it can be written, before minutes of
    optimisation, not after."""
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: use a .png file name")
    return _image_out(out)


def _image_out(out: Path) -> Path:
    from PIL import Image

    if out.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"--out {out}: unknown image extension {out.suffix!r}; use e.g. .png or .jpg")
    checks.writable_output("--out", out)
    return out


def _ad_options(steps: int, optimizer: str, lr: Optional[float] = None) -> None:
    """DDIM steps (at most the teacher's 1000 training timesteps), the AD optimiser, a positive finite lr."""
    checks.within("--steps", steps, 1, 1000)
    checks.one_of("--optimizer", optimizer, AD_OPTIMIZERS)
    if lr is not None:
        checks.within("--lr", lr, 0, above=True)


def _fits(size: tuple[int, int], teacher: str) -> None:
    """Refuse an output whose self-attention maps (tokens² floats, kept for the backward pass) cannot fit in memory.
    Tokens are latent pixels: the image downsampled by the teacher's autoencoder (read from its config)."""
    import json

    for value in size:
        checks.within("--size", value, 1)  # the teacher's own minimum (its size multiple) is checked with its folder
    try:
        blocks = len(json.loads((Path(teacher) / "vae" / "config.json").read_text())["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        blocks = 3  # the built-in teacher's; a folder that is not a teacher fails in load_teacher
    tokens = (size[0] // 2 ** (blocks - 1)) * (size[1] // 2 ** (blocks - 1))
    checks.fits_memory(f"--size {size[0]} {size[1]}", 3 * 4 * tokens**2)


def _teacher_folder(teacher: Optional[str]) -> str:
    """The teacher folder to use (the default as found, `muon_ad.default_path`), checked before torch is imported."""
    return _artefact(teacher, DEFAULT_TEACHER, "--teacher", "teacher folder")


def _student_folder(student: Optional[str]) -> str:
    """The student to use (a folder or an .onnx file; the default as found), checked before torch is imported."""
    return _artefact(student, DEFAULT_STUDENT, "--student", "student")


def _artefact(given: Optional[str], default: str, option: str, what: str) -> str:
    path = Path(given) if given is not None else default_path(default)
    if not path.exists():
        hint = f" ({missing_hint(default, option)})" if given is None else ""
        raise UserError(f"{what} not found: {path}{hint}")
    return str(path)


def _teacher_geometry(teacher: str) -> tuple[int, int]:
    """(size multiple, training image size) of a teacher folder, read from its config files: image sides must be
    multiples of the VAE's factor times the UNet's downsampling (8 for the built-in teacher, 64 for SD-1.5).
    Read here, not from the loaded model, so a bad size is answered in a second, before minutes of loading."""
    import json

    try:
        vae = json.loads((Path(teacher) / "vae" / "config.json").read_text())
        unet = json.loads((Path(teacher) / "unet" / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        return factor * 2 ** (len(unet["block_out_channels"]) - 1), int(unet["sample_size"]) * factor
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{teacher} is not a diffusers SD folder: unreadable vae/ or unet/ config.json") from None


def _working_side(short_side: int, teacher: str, size: Optional[int]) -> int:
    """AD's output short side: --size if given, else the input's own short side capped at AD_WORKING_SIDE or the
    teacher's training size, whichever is larger; checked against the teacher's multiple and memory."""
    multiple, native = _teacher_geometry(teacher)
    if size is not None and size < multiple:
        raise UserError(f"--size {size}: the short side must be at least {multiple} px for this teacher; "
                        f"nearest valid: --size {multiple}")
    return size if size is not None else max(multiple, min(short_side, max(native, AD_WORKING_SIDE)))


def _save_synthesis(result, out: Path, title: str) -> None:
    from muon_ad.data.images import save_image_atomic
    from muon_ad.synthesis import save_loss_curve

    save_image_atomic(result.image, out)
    curve = save_loss_curve(result.history, out, title)
    typer.echo(f"wrote {out} (final loss {result.history[-1]['loss']:.4f}; curve: {curve[0]}, {curve[1]})")


@app.command("stylize")
def stylize_command(
    content: Path = typer.Option(..., "--content", "-c", help="Content image (resized: short side --size, aspect kept)."),
    style: Path = typer.Option(..., "--style", "-s", help="Style image (resized to the output's short side)."),
    optimizer: str = typer.Option(AD_DEFAULTS["--optimizer"], help="adam (published AD) or muon."),
    steps: int = typer.Option(AD_DEFAULTS["--steps"], help="DDIM timesteps, one optimiser step each (published: 200)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the optimiser's, see muon_ad.synthesis.DEFAULT_LR)."),
    content_weight: float = typer.Option(AD_DEFAULTS["--content-weight"],
                                         help="Weight of the content (query) loss (published: 0.25)."),
    size: Optional[int] = typer.Option(None, help="Short side of the output in pixels, aspect kept (default: the "
                                       f"content's, at most {AD_WORKING_SIDE} px or the teacher's training size)."),
    tile: bool = typer.Option(False, "--tile", help="Seamless tiling (circular padding in the UNet and VAE decoder)."),
    content_mask: Optional[Path] = typer.Option(None, help="Label image for the content: a colour draws only on the same colour of --style-mask."),
    style_mask: Optional[Path] = typer.Option(None, help="Label image for the style (with --content-mask)."),
    teacher: Optional[str] = TeacherOption,
    student: Optional[Path] = typer.Option(None, help="A student folder (muon-ad distill or prune) or an export folder "
                                           "(muon-ad export): one forward pass, milliseconds, instead of AD; the AD "
                                           "options do not apply."),
    out: Path = typer.Option(Path("stylized.png"), help="Output PNG; the loss curve goes next to it (.loss.csv, .loss.png)."),
) -> None:
    """Style transfer by attention distillation: optimise the content latent toward the style's attention."""
    # Values, then the output, then the input files, then the model folder: all before torch is imported.
    if size is not None:
        checks.within("--size", size, 1)
    if student is not None:
        given = {"--optimizer": optimizer != AD_DEFAULTS["--optimizer"], "--steps": steps != AD_DEFAULTS["--steps"],
                 "--content-weight": content_weight != AD_DEFAULTS["--content-weight"], "--lr": lr is not None,
                 "--tile": tile, "--content-mask": content_mask is not None, "--style-mask": style_mask is not None,
                 "--teacher": teacher is not None}
        if ad_only := [name for name, changed in given.items() if changed]:
            raise UserError(f"{', '.join(ad_only)}: options of AD synthesis, which --student does not run")
        _stylize_with_student(_student_folder(str(student)), content, style, size, out)
        return
    if (content_mask is None) != (style_mask is None):
        raise UserError("masks: give both --content-mask and --style-mask, or neither")
    _ad_options(steps, optimizer, lr)
    _png(out)
    checks.within("--content-weight", content_weight, 0)
    if size is not None:
        _fits((size, size), teacher or DEFAULT_TEACHER)  # the short side; the long one once the content's aspect is known
    width, height = checks.image_file("--content", content)
    checks.image_file("--style", style)
    for name, mask in (("--content-mask", content_mask), ("--style-mask", style_mask)):
        if mask is not None:
            checks.image_file(name, mask, min_size=1)
    teacher = _teacher_folder(teacher)
    side = _working_side(min(width, height), teacher, size)
    out_size = checks.fit_size(width, height, side, _teacher_geometry(teacher)[0])
    _fits(out_size[::-1], teacher)
    typer.echo(f"working size {out_size[0]}x{out_size[1]} px (content {width}x{height}; "
               + ("--size" if size is not None else f"default: short side at most {AD_WORKING_SIDE} px or the teacher's")
               + ")")
    from muon_ad.data.images import load_rgb
    from muon_ad.models.teacher import load_teacher
    from muon_ad.synthesis import stylize

    images = [load_rgb(path) for path in (content, style)]
    masks = (load_rgb(content_mask), load_rgb(style_mask)) if content_mask is not None else None
    model = load_teacher(teacher)
    result = stylize(model, *images, steps=steps, optimizer=optimizer, lr=lr, content_weight=content_weight, size=side,
                     tile=tile, masks=masks)
    _save_synthesis(result, out, f"stylize ({optimizer})")


def _stylize_with_student(folder: str, content: Path, style: Path, size: Optional[int], out: Path) -> None:
    """The student's path: content + style → stylised image in one forward pass (content keeps its aspect)."""
    import time

    _png(out)
    if size is not None:
        checks.within("--size", size, 8)
        checks.fits_memory(f"--size {size}", STUDENT_BYTES_PER_PIXEL * size * size)  # the short side; aspect below
    width, height = checks.image_file("--content", content)
    checks.image_file("--style", style)
    side = size if size is not None else min(width, height)
    checks.fits_memory(f"--size {side}", STUDENT_BYTES_PER_PIXEL * side * side * max(width, height) / min(width, height))
    from muon_ad.data.images import load_rgb, save_image_atomic
    from muon_ad.runtime import load_backend, stylize_image

    backend = load_backend(folder)
    content_image, style_image = load_rgb(content), load_rgb(style)
    start = time.perf_counter()
    image = stylize_image(backend, content_image, style_image, size)
    seconds = time.perf_counter() - start
    save_image_atomic(image, out)
    typer.echo(f"wrote {out} (student, {seconds * 1000:.0f} ms)")


@app.command("texture")
def texture_command(
    exemplar: Path = typer.Option(..., "--exemplar", "-e", help="Texture exemplar image."),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Output height and width in pixels, multiples of the "
                                                   "teacher's (default: the exemplar's aspect at AD's working size)."),
    optimizer: str = typer.Option("adam", help="adam (published AD) or muon."),
    steps: int = typer.Option(300, help="DDIM timesteps, one optimiser step each (published: 300)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the optimiser's, see muon_ad.synthesis.DEFAULT_LR)."),
    tile: bool = typer.Option(False, "--tile", help="Seamless tiling (circular padding in the UNet and VAE decoder)."),
    seed: int = typer.Option(0, help="Seed of the initial noise latent."),
    teacher: Optional[str] = TeacherOption,
    out: Path = typer.Option(Path("texture.png"), help="Output PNG; the loss curve goes next to it (.loss.csv, .loss.png)."),
) -> None:
    """Texture synthesis by attention distillation: optimise a noise latent toward the exemplar's attention."""
    _ad_options(steps, optimizer, lr)
    _png(out)
    if size is not None:
        _fits(size, teacher or DEFAULT_TEACHER)
    width, height = checks.image_file("--exemplar", exemplar)
    teacher = _teacher_folder(teacher)
    multiple = _teacher_geometry(teacher)[0]
    if size is not None:
        checks.multiple_of("--size", size, multiple)
    else:  # the exemplar's aspect, at AD's working size
        size = checks.fit_size(width, height, _working_side(min(width, height), teacher, None), multiple)[::-1]
    _fits(size, teacher)
    typer.echo(f"output size {size[0]}x{size[1]} px (height x width; exemplar {width}x{height})")
    from muon_ad.data.images import load_rgb
    from muon_ad.models.teacher import load_teacher
    from muon_ad.synthesis import texture

    image = load_rgb(exemplar)
    model = load_teacher(teacher)
    result = texture(model, image, size=size, steps=steps, optimizer=optimizer, lr=lr, tile=tile, seed=seed)
    _save_synthesis(result, out, f"texture ({optimizer})")


@app.command("distill")
def distill_command(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/stylize-cpu.yaml"),
    overrides: Optional[list[str]] = Overrides,
    baseline: bool = typer.Option(False, "--baseline", help="The paper's baseline: AdamW everywhere, no conflict "
                                  "projection (optimizer.name=adamw distill.conflict_projection=false), in OUT_DIR-adamw."),
) -> None:
    """Distil the real-time stylisation student from the frozen teacher (resumes from its last checkpoint)."""
    _config_file(config)
    from muon_ad.recipes.distill import DistillConfig, distill

    if run := _launch_recipe(DistillConfig, distill, config, overrides, baseline):
        cfg, folder = run
        typer.echo(f"student: {folder}\nsamples: {Path(cfg.train.out_dir) / 'samples.png'}")


def _launch_recipe(config_class: type, recipe: Callable[[object], Path], config: Path, overrides: Optional[list[str]],
                   baseline: bool) -> tuple[object, Path] | None:
    """Load CONFIG (+ overrides, + the --baseline change), run the recipe, and return (config, student folder) on the
    process that reports, None on the others. Under torchrun / accelerate launch a user error is one line, from rank 0."""
    from muon_ad.config import load_config
    from muon_ad.recipes.distill import as_baseline
    from muon_ad.training import distributed

    cfg = load_config(config_class, config, overrides or [])
    if baseline:
        cfg = as_baseline(cfg)
    with distributed.errors_from_rank0():
        folder = recipe(cfg)
    return (cfg, folder) if distributed.is_main_process() else None


@app.command("evaluate")
def evaluate_command(
    target: Path = typer.Argument(..., help="A student folder (stylises held-out built-in pairs) or a folder of images."),
    real: Optional[Path] = typer.Option(None, help="Reference images for FID/KID (needed when TARGET is an image folder)."),
    pairs: Optional[Path] = typer.Option(None, help="Aligned references for SSIM/PSNR, e.g. the content images (image folder)."),
    feature: str = typer.Option("domain", help="FID features: domain (a CNN trained on the built-in textures) or inception."),
    feature_path: Optional[Path] = typer.Option(None, help="Inception weights file, or a trained domain-feature folder."),
    count: int = typer.Option(64, help="Built-in (content, style) pairs to stylise when TARGET is a student."),
    size: int = typer.Option(64, help="Image size of the built-in pairs (the student's training size)."),
    out: Path = typer.Option(Path("eval-results"), help="Folder for metrics.json, metrics.md (and the stylised images)."),
) -> None:
    """FID/KID (and SSIM/PSNR with pairs) of a student checkpoint or an image folder, as JSON and Markdown."""
    import json

    checks.within("--count", count, 1)
    checks.within("--size", size, 16, 1024)
    checks.one_of("--feature", feature, ("domain", "inception"))
    checks.writable_output("--out", out)
    for name, folder in (("TARGET", target), ("--real", real), ("--pairs", pairs)):
        if folder is not None and not folder.is_dir():
            raise UserError(f"{name} {folder}: folder not found")
    is_student = ((target / "config.json").is_file() and (target / "model.safetensors").is_file()
                  or (target / "export.json").is_file())
    if not is_student and real is None:
        raise UserError(f"{target} is an image folder: give --real (the reference images for FID)")
    # Every input is checked (headers read, unreadable files counted) before the feature network trains, not after.
    if not is_student:
        outputs = checks.image_folder("TARGET", target, at_least=2)[1]
    if real is not None:
        checks.image_folder("--real", real, at_least=2)
    if pairs is not None:
        references = checks.image_folder("--pairs", pairs)[1]
        if not is_student and references != outputs:
            raise UserError(f"--pairs {pairs}: {references} image files for {outputs} in {target} "
                            "(SSIM pairs them by sorted file name)")
    if feature == "inception" and feature_path is not None and not feature_path.exists():
        raise UserError(f"--feature-path {feature_path}: not found")
    from muon_ad.io import write_text_atomic
    from muon_ad.data.images import save_image_atomic
    from muon_ad.eval import evaluate_images, to_markdown
    from muon_ad.eval.domain_features import DomainFeatures
    from muon_ad.eval.stylization import builtin_domain_features, builtin_pairs, evaluate_stylized, stylize_pairs
    from muon_ad.runtime import load_backend
    if feature == "domain" and feature_path is None:
        feature_path = out / "fid-domain"  # trained once on the built-in textures, then reused
        if not (feature_path / "config.json").is_file():
            typer.echo(f"training the FID-domain feature network on built-in textures at {size} px -> {feature_path}")
            builtin_domain_features(size).save(feature_path)
        elif DomainFeatures.load(feature_path).size != size:
            raise UserError(f"{feature_path} was trained at another size; pass --feature-path or another --out")
    out.mkdir(parents=True, exist_ok=True)
    if is_student:
        contents, styles = builtin_pairs(count, size)
        images = stylize_pairs(load_backend(target), contents, styles)
        for i, image in enumerate(images):
            save_image_atomic(image, out / "images" / f"{i:05d}.png")
        metrics = evaluate_stylized(images, contents, styles, feature, feature_path)
    else:
        metrics = evaluate_images(target, real, feature=feature, feature_path=feature_path, pairs_with=pairs)
    metrics["target"] = str(target)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    write_text_atomic(out / "metrics.md", to_markdown(metrics))
    typer.echo(to_markdown(metrics) + f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}")


@app.command("stream")
def stream_command(
    source_spec: str = typer.Option("synthetic", "--input", "-i", help="synthetic, a folder of frames, or a video (.gif; .mp4 etc. with PyAV)."),
    style: Path = typer.Option(..., "--style", "-s", help="Style image."),
    student: Optional[str] = typer.Option(None, help="Student folder (torch) or exported folder (muon-ad export: ONNX "
                                          "Runtime); default: the one `muon-ad distill` or `make demo` saves "
                                          f"({DEFAULT_STUDENT})."),
    size: int = typer.Option(STREAM_SIZE, help="Frame size: short side, centre crop (the default runs in real time on a laptop CPU)."),
    frames: int = typer.Option(96, help="Length of the synthetic clip."),
    skip_threshold: float = typer.Option(0.0, help="Reuse the last output when a frame's mean abs change is below this (0: off)."),
    out: Optional[Path] = typer.Option(None, help="Folder of PNG frames, or a video file (.gif; .mp4 needs PyAV)."),
    fps: float = typer.Option(24.0, help="Frame rate of the written video."),
    device: str = typer.Option("cpu", help="cpu or cuda (an exported student: ONNX Runtime CUDA/TensorRT providers)."),
) -> None:
    """Stylise a stream of frames live with the student; shows FPS, optionally skips unchanged frames."""
    from contextlib import nullcontext

    checks.within("--frames", frames, 1)
    checks.within("--fps", fps, 0, above=True)
    checks.within("--skip-threshold", skip_threshold, 0)
    checks.one_of("--device", device.partition(":")[0], ("cpu", "cuda"))
    checks.within("--size", size, 8)
    checks.fits_memory(f"--size {size}", STUDENT_BYTES_PER_PIXEL * size * size)
    if out is not None:
        from muon_ad.runtime import check_frame_output

        check_frame_output(out)
    if source_spec != "synthetic" and not Path(source_spec).exists():
        raise UserError(f"--input {source_spec}: not found (give 'synthetic', a folder of frames or a video file)")
    checks.image_file("--style", style)
    student = _student_folder(student)
    checks.device("--device", device)  # imports torch for cuda only
    from muon_ad.data.images import load_rgb, to_tensor
    from muon_ad.runtime import FrameWriter, Stylizer, load_backend, open_source, run_stream

    source = open_source(source_spec, size, frames)
    stylizer = Stylizer(load_backend(student, device), to_tensor(load_rgb(style)), skip_threshold)
    typer.echo(f"frames at {size} px (short side, centre crop; --size to change)")
    with FrameWriter(out, fps) if out is not None else nullcontext() as writer:
        stats = run_stream(source, stylizer, sink=writer.write if writer is not None else None)
    typer.echo(f"{stats.frames} frames ({stats.stylised} stylised, {stats.skipped} skipped): {stats.fps:.1f} FPS end to end, "
               f"{stats.model_fps:.1f} FPS per forward pass" + (f"; wrote {out}" if out is not None else ""))


@app.command("demo")
def demo_command(
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes and steps throughout (about 2 minutes): checks the pipeline, not the method."),
    out: Path = typer.Option(Path("demo-report"), help="Report folder: index.html, report.md, pictures, each stage's outputs."),
) -> None:
    """The whole method on built-in data: teacher, AD (Adam vs Muon), distillation (Muon-AD vs AdamW),
    evaluation, real-time and memory benchmarks, a stylised stream; writes an HTML + Markdown report."""
    from muon_ad.demo import run_demo

    checks.writable_output("--out", out)
    index = run_demo(out, quick=quick)
    typer.echo(f"report: {index} (and {index.parent / 'report.md'})")


@app.command("distill-t2i")
def distill_t2i_command(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/t2i-tiny.yaml"),
    overrides: Optional[list[str]] = Overrides,
    baseline: bool = typer.Option(False, "--baseline", help="AdamW everywhere, no conflict projection "
                                  "(optimizer.name=adamw distill.conflict_projection=false), in OUT_DIR-adamw."),
) -> None:
    """Distil the compressed, few-step text-to-image student from the teacher (resumes from its last checkpoint)."""
    _config_file(config)
    from muon_ad.recipes.distill_t2i import DistillT2IConfig, distill_t2i

    if run := _launch_recipe(DistillT2IConfig, distill_t2i, config, overrides, baseline):
        cfg, folder = run
        typer.echo(f"student: {folder} (muon-ad sample --teacher {folder} -p ...)\n"
                   f"teacher vs student: {Path(cfg.train.out_dir) / 'samples.png'}")

# --- pruning (issue #16) ---
@app.command("prune")
def prune_command(
    student: Path = typer.Argument(..., help="A student folder (what muon-ad distill saves: config.json + model.safetensors)"),
    keep: float = typer.Option(..., "--keep", help="Fraction of channels and attention heads kept, in (0, 1]"),
    out: Path = typer.Option(..., "--out", help="Folder for the compacted student (safetensors + widths.json)"),
    finetune_steps: Optional[int] = typer.Option(
        None, "--finetune-steps", help="Recovery fine-tune steps on the AD-target bank (the distillation recipe, with "
        "the student's teacher; its run folder is OUT-finetune). Default: the edge path's 600, without which a pruned "
        "student is near the identity map; 0 prunes only"),
    criterion: str = typer.Option("entropy", "--criterion", help="entropy (attention-row entropy + gradient "
                                  "sensitivity) or magnitude (L2 baseline)"),
    config: Optional[Path] = typer.Option(None, "--config", help="Distillation config of the fine-tune (default: the "
                                          "student's run config.yaml, else the built-in defaults)"),
    attention_blocks: Optional[int] = typer.Option(None, "--attention-blocks", help="Transformer blocks kept, the "
                                                   "most important by the criterion (default: all; the CPU preset has 3; "
                                                   "the edge path keeps 2: see the README's \"Pruning and compaction\")"),
) -> None:
    """Prune a trained student (torch-pruning DepGraph), remove the pruned channels and heads (and whole transformer
    blocks with --attention-blocks), then fine-tune it back on its run's AD targets (--finetune-steps)."""
    from muon_ad.compress.prune import EDGE_FINETUNE_STEPS
    from muon_ad.recipes.compress import prune

    if config is not None and not config.is_file():
        raise UserError(f"--config {config}: no such file")
    steps = EDGE_FINETUNE_STEPS if finetune_steps is None else finetune_steps
    folder = prune(student, keep, out, criterion, steps, config, attention_blocks)
    typer.echo(f"pruned student: {folder}")


@app.command("ui")
def ui_command(
    teacher: Optional[str] = typer.Option(None, help="Diffusers SD-layout folder for AD and text to image (changeable on the "
                                          f"page); default: {DEFAULT_TEACHER}, as the other commands find it."),
    student: Optional[str] = typer.Option(None, help="Student folder or exported .onnx (changeable on the page); "
                                          f"default: the one `muon-ad distill` or `make demo` saves ({DEFAULT_STUDENT})."),
    port: int = typer.Option(7860, help="Port of the web page: http://127.0.0.1:PORT"),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: reachable from other machines)."),
    share: bool = typer.Option(False, "--share/--no-share", help="Also open a public gradio.live link (needs the internet)."),
    device: str = typer.Option("cpu", help="cpu or cuda: where the models run."),
) -> None:
    """The web UI (Gradio, the optional `ui` extra): style transfer, textures, text to image, webcam/video."""
    import importlib.util

    checks.within("--port", port, 1, 65535)
    checks.device("--device", device)
    if importlib.util.find_spec("gradio") is None:
        raise UserError("the web UI needs gradio: pip install -e '.[ui]'")
    from muon_ad.ui import launch

    typer.echo(f"muon-ad ui: open http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port} (Ctrl-C stops it)")
    # Defaults as the other commands find them; a missing model is a one-line error on the page when it is used.
    launch(teacher or str(default_path(DEFAULT_TEACHER)), student or str(default_path(DEFAULT_STUDENT)), device, host, port,
           share)

@app.command("export")
def export_command(
    student: Path = typer.Argument(..., help="A student folder (muon-ad distill or muon-ad prune)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 (GPUs / TensorRT) or int8 (convolutions; QDQ, calibrated)."),
    calibration: int = typer.Option(256, help="int8: (content, style) calibration pairs."),
    calibration_method: str = typer.Option("percentile", help="int8: minmax, percentile (99.99th) or entropy."),
    reduce_range: Optional[bool] = typer.Option(None, "--reduce-range/--no-reduce-range", help="int8: 7-bit weights "
                                                "(default: only on CPUs without VNNI, where 8 bits saturate)."),
    calibration_content: Optional[Path] = typer.Option(None, help="int8: a folder of content images (default: built-in scenes)."),
    calibration_style: Optional[Path] = typer.Option(None, help="int8: a folder of style images (default: built-in textures)."),
    out: Path = typer.Option(..., help="The export folder (model.onnx, style.onnx, export.json, report.json)."),
) -> None:
    """Export a student to ONNX (fp32 / fp16 / int8) as a folder that `stylize --student`, `stream --student` and
    the demo run with ONNX Runtime; writes the parity and quality report beside the graphs."""
    import json

    from muon_ad.recipes.export import export_student

    folder = export_student(
        student, out, precision, calibration, calibration_method, reduce_range,
        content="folder" if calibration_content else "scenes", content_path=calibration_content and str(calibration_content),
        style="folder" if calibration_style else "textures", style_path=calibration_style and str(calibration_style))
    report = json.loads((folder / "report.json").read_text())
    typer.echo(f"wrote {folder} ({precision}): fp32 graphs vs torch max abs diff "
               f"{report['parity']['max_abs_diff']:.2e}, "
               f"SSIM vs torch fp32 {report['quality']['ssim_vs_fp32']:.4f}, model.onnx {report['files_mb']['model.onnx']:.2f} MB")


@app.command("profile")
def profile_command(
    exports: list[Path] = typer.Argument(..., help="One or more export folders (muon-ad export), timed side by side."),
    size: list[int] = typer.Option([256, 512], help="Square frame sizes in px (repeat the option for several)."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime intra-op threads (default: ORT's, all cores)."),
    top: int = typer.Option(8, help="Op types and nodes listed per export."),
    repeats: int = typer.Option(40, help="Timed frames per export and size (blocks of 10, taking turns)."),
) -> None:
    """Where an exported student's time goes: median latency of each export at each size, timed side by side, and
    ONNX Runtime's kernel time by op type and by node (its profiler, the first run left out)."""
    from muon_ad.eval.onnx_profile import profile_exports
    from muon_ad.export.onnx import MAX_SIDE

    for value in size:
        checks.within("--size", value, 1, MAX_SIDE)
        checks.fits_memory(f"--size {value}", STUDENT_BYTES_PER_PIXEL * value * value)
    checks.within("--top", top, 1)
    checks.within("--repeats", repeats, 1)
    if threads is not None:  # 0 would silently mean ORT's default
        checks.within("--threads", threads, 1)
    for frame, by_export in profile_exports(exports, size, threads, repeats).items():
        for folder, figures in by_export.items():
            kernels = sum(figures["ops"].values())
            typer.echo(f"{frame}x{frame} {folder}: {figures['ms']:.2f} ms per frame (median), "
                       f"kernels {kernels:.2f} ms")
            for label in ("ops", "nodes"):
                for name, ms in list(figures[label].items())[:top]:
                    typer.echo(f"  {label[:-1]:4s} {ms:7.2f} ms {100 * ms / kernels:5.1f} %  {name}")


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # silence optional-dependency chatter
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(sys.argv) == 1:
        sys.argv.append("--help")  # outside standalone mode, no arguments would be an error holding the help text
    try:
        status = app(standalone_mode=False)  # so that click's usage errors reach us, to be printed as one line too
    except UserError as error:
        typer.echo(f"muon-ad: error: {error}", err=True)
        sys.exit(2)
    except TyperException as error:  # click's usage errors (missing option, bad type, unknown option)
        typer.echo(f"muon-ad: error: {error.format_message()}", err=True)
        sys.exit(2)
    except typer.Abort:  # end of input at a prompt
        sys.exit(1)
    if status == 130:  # what typer returns for a KeyboardInterrupt (Ctrl-C, or a training run stopped by a signal)
        typer.echo("muon-ad: interrupted", err=True)
    sys.exit(status if isinstance(status, int) else 0)
