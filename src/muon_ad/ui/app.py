"""The web UI's page: one tab per task, each button wired to its handler in `tasks` (and to an API name
that `gradio_client` can call: /stylize, /texture, /sample, /video).

Models are named by folder on the page (defaults: the command line's --teacher and --student) and loaded
on first use, so the page opens at once and a missing model is a one-line error on the button that
needs it. Every run that uses the teacher shares one queue slot: two AD runs at once would share the
teacher's attention hooks, and on a CPU they would only slow each other down.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from muon_ad import DEFAULT_TEACHER
from muon_ad.data.procedural import make_scene, make_texture
from muon_ad.errors import UserError
from muon_ad.runtime import default_student
from muon_ad.ui.tasks import METHODS, OPTIMIZERS, sample_task, stylize_task, texture_task, video_task, webcam_task

DEFAULT_PORT = 7860
TEACHER_SLOT = "teacher"  # concurrency id of every event that runs the teacher
IMAGE_HEIGHT = 280  # px on the page: the built-in teacher's 48 px results are shown enlarged, pixels kept sharp
# Small images (the built-in teacher's are 48 px) are drawn enlarged to their box, sharp, not at 48 screen px.
CSS = ".muon-picture img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"


def _examples() -> dict[str, str]:
    """Built-in example inputs (a procedural scene and two textures) as PNG files, for the Examples rows."""
    folder = Path(tempfile.mkdtemp(prefix="muon-ad-ui-examples-"))
    rng = np.random.default_rng(0)
    images = {"scene": make_scene(128, rng)[0], "stripes": make_texture("stripes", "blue_orange", 128, rng),
              "dots": make_texture("dots", "red_white", 128, rng)}
    paths = {}
    for name, array in images.items():
        paths[name] = str(folder / f"{name}.png")
        Image.fromarray(array).save(paths[name])
    return paths


def _picture(label: str, elem_id: str, upload: bool = True) -> gr.Image:
    """An image input (upload or paste) or a result (PNG, downloadable), at one display height."""
    kind = {"sources": ["upload", "clipboard"]} if upload else {"format": "png", "interactive": False}
    return gr.Image(type="pil", label=label, elem_id=elem_id, height=IMAGE_HEIGHT, elem_classes=["muon-picture"], **kind)


def _loss_plot(elem_id: str) -> gr.LinePlot:
    return gr.LinePlot(x="step", y="value", color="term", title="AD loss per optimiser step", x_title="optimiser step",
                       y_title="L1 loss", elem_id=elem_id, height=260)


def build_app(teacher_dir: str = DEFAULT_TEACHER, student_dir: str | None = None, device: str = "cpu") -> gr.Blocks:
    """The page (not yet launched). `device` is where the models run."""
    student_dir = str(student_dir or default_student())
    examples = _examples()
    with gr.Blocks(title="Muon-AD") as page:
        gr.Markdown("# Muon-AD\nAttention distillation from a latent diffusion teacher (Adam or Muon), and the "
                    "real-time student distilled from it. Models are loaded from these folders on first use.")
        with gr.Row():
            teacher_box = gr.Textbox(teacher_dir, label="Teacher folder (diffusers SD layout)", elem_id="teacher-dir")
            student_box = gr.Textbox(student_dir, label="Student: a student folder, or an exported .onnx model",
                                     elem_id="student-dir")

        with gr.Tab("Style transfer"):
            with gr.Row():
                content = _picture("Content", "content")
                style = _picture("Style", "style")
                stylized = _picture("Result", "stylized", upload=False)
            with gr.Row():
                method = gr.Radio(list(METHODS), value=next(iter(METHODS)), label="Method")
                steps = gr.Slider(1, 1000, 200, step=1, label="AD steps (one per DDIM timestep; published: 200)",
                                  elem_id="stylize-steps")
                weight = gr.Slider(0, 2, 0.25, step=0.05, label="AD content weight (published: 0.25)")
            with gr.Row():
                size = gr.Slider(0, 512, 0, step=8, label="Output short side in px (0: the teacher's image size for "
                                 "AD, the content's own size for the student)")
                tile = gr.Checkbox(False, label="Seamless tiling (AD)")
                run = gr.Button("Stylise", variant="primary", elem_id="stylize-run")
            with gr.Row():
                plot = _loss_plot("stylize-loss")
                status = gr.Textbox(label="Progress", interactive=False, elem_id="stylize-status")
            gr.Examples([[examples["scene"], examples["stripes"]], [examples["scene"], examples["dots"]]],
                        [content, style], label="Built-in examples")
            run.click(partial(stylize_task, device=device),
                      [content, style, method, steps, weight, size, tile, teacher_box, student_box],
                      [stylized, plot, status], api_name="stylize", concurrency_id=TEACHER_SLOT)

        with gr.Tab("Texture synthesis"):
            with gr.Row():
                exemplar = _picture("Exemplar", "exemplar")
                synthesized = _picture("Texture", "texture", upload=False)
            with gr.Row():
                height = gr.Slider(0, 512, 0, step=8, label="Height px (0 and 0: the teacher's image size)")
                width = gr.Slider(0, 512, 0, step=8, label="Width px")
                optimizer = gr.Radio(list(OPTIMIZERS), value="Adam", label="AD optimiser")
            with gr.Row():
                texture_steps = gr.Slider(1, 1000, 300, step=1, label="AD steps (published: 300)")
                texture_tile = gr.Checkbox(False, label="Seamless tiling")
                seed = gr.Number(0, precision=0, label="Seed")
                texture_run = gr.Button("Synthesise", variant="primary", elem_id="texture-run")
            with gr.Row():
                texture_plot = _loss_plot("texture-loss")
                texture_status = gr.Textbox(label="Progress", interactive=False, elem_id="texture-status")
            gr.Examples([[examples["stripes"]], [examples["dots"]]], [exemplar], label="Built-in examples")
            texture_run.click(partial(texture_task, device=device),
                              [exemplar, height, width, optimizer, texture_steps, texture_tile, seed, teacher_box],
                              [synthesized, texture_plot, texture_status], api_name="texture",
                              concurrency_id=TEACHER_SLOT)

        with gr.Tab("Text to image"):
            gr.Markdown("Any diffusers SD folder: the teacher, or a few-step text-to-image student. A style image "
                        "turns on AD-guided sampling.")
            with gr.Row():
                model_box = gr.Textbox(teacher_dir, label="Model folder (diffusers SD layout)", elem_id="t2i-dir")
                prompts = gr.Textbox("blue and orange stripes", label="Prompts (one per line)", lines=3)
                t2i_style = _picture("Style (optional)", "t2i-style")
            with gr.Row():
                t2i_steps = gr.Slider(0, 1000, 0, step=1, label="Steps (0: the folder's own: 30 for a teacher, a "
                                      "few-step student's few)")
                guidance = gr.Number(None, minimum=0, label="Guidance scale (empty: the folder's own)")
                t2i_seed = gr.Number(0, precision=0, label="Seed")
                t2i_optimizer = gr.Radio(list(OPTIMIZERS), value="Adam", label="AD optimiser (with a style)")
                ad_iters = gr.Slider(0, 10, 3, step=1, label="AD steps per DDIM step (with a style)")
            t2i_run = gr.Button("Draw", variant="primary", elem_id="t2i-run")
            with gr.Row():
                gallery = gr.Gallery(label="Images", columns=4, format="png", elem_id="t2i-images")
                t2i_plot = _loss_plot("t2i-loss")
            t2i_status = gr.Textbox(label="Status", interactive=False)
            t2i_run.click(partial(sample_task, device=device),
                          [prompts, t2i_steps, guidance, t2i_seed, t2i_style, t2i_optimizer, ad_iters, model_box],
                          [gallery, t2i_plot, t2i_status], api_name="sample", concurrency_id=TEACHER_SLOT)

        with gr.Tab("Webcam / video"):
            gr.Markdown("The student, frame by frame: the live webcam, or a video file (GIF; .mp4 etc. with PyAV).")
            with gr.Row():
                stream_style = _picture("Style", "stream-style")
                frame_size = gr.Slider(0, 1024, 256, step=8, label="Frame short side px, centre crop (0: as given)")
            gr.Examples([[examples["stripes"]], [examples["dots"]]], [stream_style], label="Built-in styles")
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", elem_id="webcam")
                webcam_out = gr.Image(type="numpy", label="Stylised", interactive=False, elem_id="webcam-out")
            webcam_status = gr.Textbox(label="Speed", interactive=False, elem_id="webcam-status")
            stylizer_state = gr.State(None)
            webcam.stream(partial(webcam_task, device=device), [webcam, stream_style, student_box, frame_size,
                                                                  stylizer_state],
                          [webcam_out, webcam_status, stylizer_state], stream_every=0.1, api_name="webcam")
            with gr.Row():
                video = gr.File(label="Video or GIF", file_types=[".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm"],
                                type="filepath")
                video_preview = _picture("Current frame", "video-frame", upload=False)
                video_out = gr.File(label="Stylised GIF", interactive=False)
            with gr.Row():
                fps = gr.Slider(1, 60, 12, step=1, label="GIF frame rate")
                video_run = gr.Button("Stylise video", variant="primary")
            video_status = gr.Textbox(label="Progress", interactive=False)
            video_run.click(partial(video_task, device=device), [video, stream_style, student_box, frame_size, fps],
                            [video_preview, video_out, video_status], api_name="video")
    return page


def launch(teacher_dir: str = DEFAULT_TEACHER, student_dir: str | None = None, device: str = "cpu",
           host: str = "127.0.0.1", port: int = DEFAULT_PORT, share: bool = False, block: bool = True) -> gr.Blocks:
    """Build the page and serve it at http://host:port (queued: one teacher run at a time)."""
    page = build_app(teacher_dir, student_dir, device).queue(default_concurrency_limit=1)
    try:
        page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
                    css=CSS)
    except OSError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot serve the UI on {host}:{port}: {first} (try another --port)") from None
    return page
