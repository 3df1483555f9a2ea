"""The web UI's handlers: page inputs in, library calls, page outputs out (no layout here, see app.py).

Each handler is what one button (or the webcam stream) runs, and what `gradio_client` calls by the
same API name. AD runs are generators: they yield (image, loss curve, status) as the optimisation goes,
with a preview decoded from the latent ten times per run, and the final image at the end.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

from muon_ad import checks
from muon_ad.data.images import to_pil, to_rgb, to_tensor
from muon_ad.errors import UserError
from muon_ad.runtime import FrameWriter, Stylizer, open_source, run_stream, stylize_image
from muon_ad.synthesis import guided_sample, stylize, texture
from muon_ad.ui import live
from muon_ad.ui.live import Done, one_line_errors, run_live

# The style-transfer methods as the page names them: AD with an optimiser, or the student's forward pass.
METHODS = {"AD · Adam": "adam", "AD · Muon": "muon", "Student (one forward pass)": None}
OPTIMIZERS = {"Adam": "adam", "Muon": "muon"}
PREVIEWS = 10  # latent decodes per AD run, for the live preview


def loss_frame(history: list[dict[str, float]], terms: tuple[str, ...]) -> pd.DataFrame:
    """History rows → the long table `gr.LinePlot` draws: one (step, term, value) row per term and step."""
    rows = [(row["step"], term, row[term]) for row in history for term in terms]
    return pd.DataFrame(rows, columns=["step", "term", "value"])


def _image(value: Any, what: str) -> Image.Image:
    if value is None:
        raise UserError(f"upload {what}")
    return to_rgb(value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value)))


def _ad_live(model, run, steps: int, terms: tuple[str, ...]) -> Iterator[tuple]:
    """Run `run(on_step)` (an AD synthesis) live: yield (preview or gr.skip(), loss table, status) as it goes."""
    every = max(1, steps // PREVIEWS)

    def work(report):
        def on_step(row: dict[str, float], latent: torch.Tensor) -> None:
            preview = None
            if (row["step"] + 1) % every == 0:
                with torch.no_grad():
                    preview = model.decode_latents(latent)[0]
            report((row, preview))

        return run(on_step)

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for event in run_live(work):
        if isinstance(event, Done):
            result = event.result
            status = (f"done: {len(result.history)} steps in {time.perf_counter() - start:.1f} s, "
                      f"final loss {result.history[-1]['loss']:.4f}")
            yield to_pil(result.image), loss_frame(result.history, terms), status
            return
        previews = [preview for _, preview in event if preview is not None]
        history += [row for row, _ in event]
        status = f"step {len(history)} of {steps}, loss {history[-1]['loss']:.4f}, {time.perf_counter() - start:.1f} s"
        yield (to_pil(previews[-1]) if previews else gr.skip()), loss_frame(history, terms), status


@one_line_errors
def stylize_task(content, style, method: str, steps: float, content_weight: float, size: float, tile: bool,
                 teacher_dir: str, student_dir: str, device: str = "cpu") -> Iterator[tuple]:
    """Style transfer: AD through the teacher (live loss curve), or the student in one forward pass."""
    content, style = _image(content, "a content image"), _image(style, "a style image")
    checks.one_of("method", method, METHODS)
    size = int(size) or None
    if METHODS[method] is None:
        backend = live.student(student_dir, device)
        start = time.perf_counter()
        image = stylize_image(backend, content, style, size)
        yield to_pil(image), loss_frame([], ()), f"student: {(time.perf_counter() - start) * 1000:.0f} ms"
        return
    checks.within("content weight", content_weight, 0)
    model = live.teacher(teacher_dir, device)
    terms = ("loss", "ad", "content") if content_weight > 0 else ("loss",)
    yield from _ad_live(model, lambda on_step: stylize(
        model, content, style, steps=int(steps), optimizer=METHODS[method], content_weight=content_weight, size=size,
        tile=tile, progress=False, on_step=on_step), int(steps), terms)


@one_line_errors
def texture_task(exemplar, height: float, width: float, optimizer: str, steps: float, tile: bool, seed: float,
                 teacher_dir: str, device: str = "cpu") -> Iterator[tuple]:
    """Texture synthesis by AD from noise (0 for both sides: the teacher's own image size)."""
    exemplar = _image(exemplar, "a texture exemplar")
    checks.one_of("optimizer", optimizer, OPTIMIZERS)
    size = (int(height), int(width)) if height and width else None
    model = live.teacher(teacher_dir, device)
    yield from _ad_live(model, lambda on_step: texture(
        model, exemplar, size=size, steps=int(steps), optimizer=OPTIMIZERS[optimizer], tile=tile, seed=int(seed),
        progress=False, on_step=on_step), int(steps), ("loss",))


@one_line_errors
def sample_task(prompts: str, steps: float, guidance: float | None, seed: float, style, optimizer: str,
                ad_iters: float, model_dir: str, device: str = "cpu", progress=gr.Progress(track_tqdm=True)) -> tuple:
    """Text-to-image from any diffusers SD folder (the teacher, or a few-step text-to-image student); steps 0 and
    no guidance: the folder's own (a student's `sampling.json`). With a style image, AD-guided sampling (and its
    loss curve)."""
    lines = [line.strip() for line in (prompts or "").splitlines() if line.strip()]
    if not lines:
        raise UserError("write a prompt (one per line for several images)")
    checks.within("steps", steps, 0, 1000)
    if guidance is not None:
        checks.within("guidance", guidance, 0)
    model = live.teacher(model_dir, device)
    steps = int(steps) or model.default_steps
    guidance = model.default_guidance if guidance is None else guidance
    start = time.perf_counter()
    if style is None:
        images, history = model.sample(lines, steps=steps, guidance_scale=guidance, seed=int(seed)), []
    else:
        checks.one_of("optimizer", optimizer, OPTIMIZERS)
        images, history = guided_sample(model, lines, _image(style, "a style image"), steps, guidance, int(seed),
                                        int(ad_iters), OPTIMIZERS[optimizer])
    gallery = [(to_pil(image), line) for image, line in zip(images, lines)]
    return gallery, loss_frame(history, ("loss",)), (f"{len(lines)} image(s), {steps} steps, guidance {guidance:g}, "
                                                     f"in {time.perf_counter() - start:.1f} s")


@one_line_errors
def webcam_task(frame, style, student_dir: str, size: float, state: dict | None, device: str = "cpu") -> tuple:
    """One webcam frame through the student (the style encoded once per style, student and size)."""
    if frame is None:
        return None, "", state
    style = _image(style, "a style image first")
    size = int(size) or None
    key = (student_dir, live.stamp(student_dir), hashlib.md5(style.tobytes()).hexdigest(), device)
    if not state or state.get("key") != key:
        state = {"key": key, "stylizer": Stylizer(live.student(student_dir, device), to_tensor(style))}
    start = time.perf_counter()
    image = state["stylizer"](to_tensor(_image(frame, "a frame"), size))
    return np.asarray(to_pil(image)), f"{(time.perf_counter() - start) * 1000:.0f} ms per frame", state


@one_line_errors
def video_task(video, style, student_dir: str, size: float, fps: float, device: str = "cpu") -> Iterator[tuple]:
    """A video file (or GIF) through the student frame by frame, shown live; the result as a GIF to download."""
    if video is None:
        raise UserError("upload a video or GIF")
    checks.within("fps", fps, 0, above=True)
    style = _image(style, "a style image")
    stylizer = Stylizer(live.student(student_dir, device), to_tensor(style))
    frames = open_source(str(video), int(size) or None)
    out = Path(tempfile.mkdtemp(prefix="muon-ad-ui-")) / f"{Path(str(video)).stem}-stylized.gif"

    def work(report):
        with FrameWriter(out, fps) as writer:
            def sink(frame: torch.Tensor) -> None:
                writer.write(frame)
                report(frame)

            return run_stream(frames, stylizer, sink=sink, progress=False)

    count = 0
    for event in run_live(work):
        if isinstance(event, Done):
            stats = event.result
            yield gr.skip(), str(out), (f"{stats.frames} frames: {stats.model_fps:.1f} FPS per forward pass, "
                                        f"{stats.fps:.1f} FPS end to end")
            return
        count += len(event)
        yield to_pil(event[-1]), None, f"frame {count}"
