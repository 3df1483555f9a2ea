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
from typer.exceptions import TyperException

from muon_ad import DEFAULT_GUIDANCE_SCALE, DEFAULT_TEACHER, checks
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
# The student's activations at one pixel of its input, with headroom: about 80 floats at base 32, stem stride 4.
STUDENT_BYTES_PER_PIXEL = 200
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
    if Path(folder) == Path(DEFAULT_TEACHER):
        typer.echo("how often its samples are the family and palette asked for: muon-ad bench teacher-quality")


@app.command("sample")
def sample_command(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Text prompt; repeat for several images."),
    teacher: str = typer.Option(DEFAULT_TEACHER, help="Diffusers SD-layout folder (SD-1.5 or the built-in tiny teacher)."),
    steps: int = typer.Option(30, help="DDIM steps."),
    guidance: float = typer.Option(DEFAULT_GUIDANCE_SCALE, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("samples.png"), help="Output PNG (a labelled grid when there are several prompts)."),
    style: Optional[Path] = typer.Option(None, help="Style image: AD-guided sampling (AD optimiser steps on the latent after each DDIM step)."),
    optimizer: str = typer.Option("adam", help="AD optimiser with --style: adam or muon."),
    ad_iters: int = typer.Option(3, help="AD optimiser steps after each DDIM step (with --style)."),
) -> None:
    """Draw images from a teacher with DDIM and save them as one PNG (with --style: AD-guided, plus its loss curve)."""
    from muon_ad.data.images import load_rgb, save_image_atomic
    from muon_ad.models.teacher import load_teacher
    from muon_ad.visual import image_grid

    _ad_options(steps, optimizer)
    checks.within("--guidance", guidance, 0)
    checks.within("--ad-iters", ad_iters, 0)
    _image_out(out)
    style_image = load_rgb(style) if style is not None else None  # bad input fails before the teacher loads
    model = load_teacher(teacher)
    if style_image is None:
        images = model.sample(prompt, steps=steps, guidance_scale=guidance, seed=seed)
    else:
        from muon_ad.synthesis import guided_sample, save_loss_curve

        images, history = guided_sample(model, prompt, style_image, steps, guidance, seed, ad_iters, optimizer)
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
        checks.within("--size", value, 8)
    try:
        blocks = len(json.loads((Path(teacher) / "vae" / "config.json").read_text())["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        blocks = 3  # the built-in teacher's; a folder that is not a teacher fails in load_teacher
    tokens = (size[0] // 2 ** (blocks - 1)) * (size[1] // 2 ** (blocks - 1))
    checks.fits_memory(f"--size {size[0]} {size[1]}", 3 * 4 * tokens**2)


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
    optimizer: str = typer.Option("adam", help="adam (published AD) or muon."),
    steps: int = typer.Option(200, help="DDIM timesteps, one optimiser step each (published: 200)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the optimiser's, see muon_ad.synthesis.DEFAULT_LR)."),
    content_weight: float = typer.Option(0.25, help="Weight of the content (query) loss (published: 0.25)."),
    size: Optional[int] = typer.Option(None, help="Short side of the output in pixels (default: the teacher's image size)."),
    tile: bool = typer.Option(False, "--tile", help="Seamless tiling (circular padding in the UNet and VAE decoder)."),
    content_mask: Optional[Path] = typer.Option(None, help="Label image for the content: a colour draws only on the same colour of --style-mask."),
    style_mask: Optional[Path] = typer.Option(None, help="Label image for the style (with --content-mask)."),
    teacher: str = typer.Option(DEFAULT_TEACHER, help="Diffusers SD-layout folder (SD-1.5 or the built-in tiny teacher)."),
    student: Optional[Path] = typer.Option(None, help="A distilled student folder (muon-ad distill): one forward pass, milliseconds, instead of AD."),
    out: Path = typer.Option(Path("stylized.png"), help="Output PNG; the loss curve goes next to it (.loss.csv, .loss.png)."),
) -> None:
    """Style transfer by attention distillation: optimise the content latent toward the style's attention."""
    from muon_ad.data.images import load_rgb
    from muon_ad.models.teacher import load_teacher
    from muon_ad.synthesis import stylize

    if size is not None:
        checks.within("--size", size, 8)
    if student is not None:
        _stylize_with_student(student, content, style, size, out)
        return
    if (content_mask is None) != (style_mask is None):
        raise UserError("masks: give both --content-mask and --style-mask, or neither")
    _ad_options(steps, optimizer, lr)
    _png(out)
    checks.within("--content-weight", content_weight, 0)
    if size is not None:
        _fits((size, size), teacher)  # the short side; the long one is checked once the content's aspect is known
    images = [load_rgb(path) for path in (content, style)]
    masks = (load_rgb(content_mask), load_rgb(style_mask)) if content_mask is not None else None
    model = load_teacher(teacher)
    result = stylize(model, *images, steps=steps, optimizer=optimizer, lr=lr, content_weight=content_weight, size=size,
                     tile=tile, masks=masks)
    _save_synthesis(result, out, f"stylize ({optimizer})")


def _stylize_with_student(folder: Path, content: Path, style: Path, size: Optional[int], out: Path) -> None:
    """The student's path: content + style → stylised image in one forward pass (content keeps its aspect)."""
    import time

    from muon_ad.data.images import load_rgb, save_image_atomic, to_tensor
    from muon_ad.runtime import encode_style, load_backend, run_student

    _png(out)
    backend = load_backend(folder)
    content_image, style_image = load_rgb(content), load_rgb(style)
    if size is not None:
        aspect = max(content_image.size) / min(content_image.size)
        checks.fits_memory(f"--size {size}", STUDENT_BYTES_PER_PIXEL * size * size * aspect)
        scale = size / min(content_image.size)
        content_image = content_image.resize((round(content_image.width * scale), round(content_image.height * scale)))
    start = time.perf_counter()
    image = run_student(backend, to_tensor(content_image), encode_style(backend, to_tensor(style_image)))
    seconds = time.perf_counter() - start
    save_image_atomic(image[0], out)
    typer.echo(f"wrote {out} (student, {seconds * 1000:.0f} ms)")


@app.command("texture")
def texture_command(
    exemplar: Path = typer.Option(..., "--exemplar", "-e", help="Texture exemplar image."),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Output height and width in pixels (default: the teacher's image size)."),
    optimizer: str = typer.Option("adam", help="adam (published AD) or muon."),
    steps: int = typer.Option(300, help="DDIM timesteps, one optimiser step each (published: 300)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the optimiser's, see muon_ad.synthesis.DEFAULT_LR)."),
    tile: bool = typer.Option(False, "--tile", help="Seamless tiling (circular padding in the UNet and VAE decoder)."),
    seed: int = typer.Option(0, help="Seed of the initial noise latent."),
    teacher: str = typer.Option(DEFAULT_TEACHER, help="Diffusers SD-layout folder (SD-1.5 or the built-in tiny teacher)."),
    out: Path = typer.Option(Path("texture.png"), help="Output PNG; the loss curve goes next to it (.loss.csv, .loss.png)."),
) -> None:
    """Texture synthesis by attention distillation: optimise a noise latent toward the exemplar's attention."""
    from muon_ad.data.images import load_rgb
    from muon_ad.models.teacher import load_teacher
    from muon_ad.synthesis import texture

    _ad_options(steps, optimizer, lr)
    _png(out)
    if size is not None:
        _fits(size, teacher)
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
    from muon_ad.config import load_config
    from muon_ad.recipes.distill import DistillConfig, as_baseline, distill

    cfg = load_config(DistillConfig, config, overrides or [])
    if baseline:
        cfg = as_baseline(cfg)
    folder = distill(cfg)
    typer.echo(f"student: {folder}\nsamples: {Path(cfg.train.out_dir) / 'samples.png'}")


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

    from muon_ad.io import write_text_atomic
    from muon_ad.data.images import save_image_atomic
    from muon_ad.eval import evaluate_images, to_markdown
    from muon_ad.eval.domain_features import DomainFeatures
    from muon_ad.eval.stylization import builtin_domain_features, builtin_pairs, evaluate_stylized, stylize_pairs
    from muon_ad.runtime import load_backend

    checks.within("--count", count, 1)
    checks.within("--size", size, 16, 1024)
    checks.one_of("--feature", feature, ("domain", "inception"))
    checks.writable_output("--out", out)
    for name, folder in (("TARGET", target), ("--real", real), ("--pairs", pairs)):
        if folder is not None and not folder.is_dir():  # before the feature network trains, not after
            raise UserError(f"{name} {folder}: folder not found")
    is_student = ((target / "config.json").is_file() and (target / "model.safetensors").is_file()
                  or (target / "export.json").is_file())
    if not is_student and real is None:
        raise UserError(f"{target} is an image folder: give --real (the reference images for FID)")
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
    student: Optional[str] = typer.Option(None, help="Student folder (torch) or exported folder (muon-ad export: ONNX Runtime); "
                                          "default: the one `muon-ad distill` saves (runs/stylize-cpu/student)."),
    size: Optional[int] = typer.Option(None, help="Resize frames: short side, centre crop (synthetic default: 256)."),
    frames: int = typer.Option(96, help="Length of the synthetic clip."),
    skip_threshold: float = typer.Option(0.0, help="Reuse the last output when a frame's mean abs change is below this (0: off)."),
    out: Optional[Path] = typer.Option(None, help="Folder of PNG frames, or a video file (.gif; .mp4 needs PyAV)."),
    fps: float = typer.Option(24.0, help="Frame rate of the written video."),
    device: str = typer.Option("cpu", help="cpu or cuda (an exported student: ONNX Runtime CUDA/TensorRT providers)."),
) -> None:
    """Stylise a stream of frames live with the student; shows FPS, optionally skips unchanged frames."""
    from contextlib import nullcontext

    from muon_ad.data.images import load_rgb, to_tensor
    from muon_ad.runtime import FrameWriter, Stylizer, default_student, load_backend, open_source, run_stream

    checks.within("--frames", frames, 1)
    checks.within("--fps", fps, 0, above=True)
    checks.within("--skip-threshold", skip_threshold, 0)
    checks.device("--device", device)
    if size is not None:
        checks.within("--size", size, 8)
        checks.fits_memory(f"--size {size}", STUDENT_BYTES_PER_PIXEL * size * size)
    if out is not None:
        checks.writable_output("--out", out)
    source = open_source(source_spec, size, frames)
    stylizer = Stylizer(load_backend(student or default_student(), device), to_tensor(load_rgb(style)), skip_threshold)
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

    checks.writable_output("--out", out)
    folder = export_student(
        student, out, precision, calibration, calibration_method, reduce_range,
        content="folder" if calibration_content else "scenes", content_path=calibration_content and str(calibration_content),
        style="folder" if calibration_style else "textures", style_path=calibration_style and str(calibration_style))
    report = json.loads((folder / "report.json").read_text())
    typer.echo(f"wrote {folder} ({precision}): parity max abs diff {report['parity']['max_abs_diff']:.2e}, "
               f"SSIM vs torch fp32 {report['quality']['ssim_vs_fp32']:.4f}, model.onnx {report['files_mb']['model.onnx']:.2f} MB")


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
