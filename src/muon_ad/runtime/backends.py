"""One interface to a stylisation student, whatever runs it: torch today, ONNX Runtime beside it.

Every caller (`stylize --student`, the stream, evaluation, the demo and the benchmarks) runs a student
through a `StudentBackend` and the two functions below, so an exported or quantised student plugs in at
one place and is scored by the code it ships with. A backend sees only what its graph can take:

- `encode_style(backend, styles)`: style images → the style code, computed once per style. The style is
  centre-cropped to a square (its aspect is never squashed) and resized to the backend's `style_size`.
- `run_student(backend, contents, code)`: content images of any size → stylised images of that size. The
  content is padded (edge replicated) to a multiple of the network's stride *outside* the graph, as an
  exported graph with a fixed padding branch needs, then cropped back and clamped to [-1, 1].

Images are float (B, 3, H, W) in [-1, 1], the project's convention; outputs come back on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from PIL import Image

from muon_ad import DEFAULT_STUDENT, default_path
from muon_ad.data.images import to_tensor
from muon_ad.errors import UserError
from muon_ad.models.student import Student, load_student, pad_to_multiple


class StudentBackend(Protocol):
    multiple: int  # content height and width must be multiples of this (the network's total stride)
    style_size: int | None  # style images are encoded at this square size (None: as given)

    def style_code(self, styles: Tensor) -> Tensor:
        """(B,3,s,s) prepared style images → what `run` takes as the style."""

    def run(self, contents: Tensor, code: Tensor) -> Tensor:
        """(B,3,H,W) contents, H and W multiples of `multiple`, and a style code (batch 1 or B) → (B,3,H,W)."""


class TorchStudent:
    """A trained `Student` in torch: the style code is its style tokens."""

    def __init__(self, student: Student, device: str | torch.device = "cpu") -> None:
        self.student, self.device = student.to(device).eval(), torch.device(device)
        self.multiple, self.style_size = student.config.downsampling, student.config.style_size

    @torch.inference_mode()
    def style_code(self, styles: Tensor) -> Tensor:
        return self.student.encode_style(styles.to(self.device))

    @torch.inference_mode()
    def run(self, contents: Tensor, code: Tensor) -> Tensor:
        return self.student.apply_style(contents.to(self.device), code)


class OnnxStudent:
    """A student exported to ONNX with inputs (content, style), run by ONNX Runtime on the CPU: the style code is
    the prepared style image itself."""

    def __init__(self, path: str | Path, threads: int | None = None, multiple: int = 1,
                 style_size: int | None = None) -> None:
        import onnxruntime as ort

        if not Path(path).is_file():
            raise UserError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        if len(self.inputs) != 2:
            raise UserError(f"{path}: expected a student with 2 inputs (content, style), found {self.inputs}")
        self.multiple, self.style_size = multiple, style_size

    def style_code(self, styles: Tensor) -> Tensor:
        return styles

    def run(self, contents: Tensor, code: Tensor) -> Tensor:
        feed = {name: np.ascontiguousarray(x.float().cpu().numpy()) for name, x in zip(self.inputs, (contents, code))}
        return torch.from_numpy(self.session.run(None, feed)[0])


def default_student() -> Path:
    """The student `muon-ad distill` (or `make demo`) saved by default, as found (`muon_ad.default_path`)."""
    return default_path(DEFAULT_STUDENT)


def load_backend(path: str | Path, device: str = "cpu") -> StudentBackend:
    """A student folder (torch) or an exported `.onnx` file (ONNX Runtime, CPU only)."""
    if str(path).endswith(".onnx"):
        if device != "cpu":
            raise UserError("the ONNX Runtime path runs on cpu here; use the student folder for --device cuda")
        return OnnxStudent(path)
    return TorchStudent(load_student(path), device)


def encode_style(backend: StudentBackend, styles: Tensor) -> Tensor:
    """The style code of (3,h,w) or (B,3,h,w) style images: centre-cropped square, resized to `style_size`."""
    styles = styles.unsqueeze(0) if styles.dim() == 3 else styles
    height, width = styles.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    styles = styles[..., top : top + side, left : left + side]
    size = backend.style_size
    if size is not None and side != size:
        styles = F.interpolate(styles, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return backend.style_code(styles)


def run_student(backend: StudentBackend, contents: Tensor, code: Tensor) -> Tensor:
    """Stylised (B,3,H,W) images of (B,3,H,W) (or one (3,H,W)) contents, any H and W, on the CPU, in [-1, 1]."""
    contents = contents.unsqueeze(0) if contents.dim() == 3 else contents
    height, width = contents.shape[-2:]
    images = backend.run(pad_to_multiple(contents, backend.multiple), code)
    return images[..., :height, :width].float().cpu().clamp(-1, 1)


def stylize_image(backend: StudentBackend, content: Image.Image, style: Image.Image, size: int | None = None) -> Tensor:
    """One content image in the style of `style`: (3, H, W) in [-1, 1], the content's short side resized to `size`
    (aspect kept; None: as given). What `stylize --student` and the web UI run."""
    if size is not None:
        scale = size / min(content.size)
        content = content.resize((round(content.width * scale), round(content.height * scale)))
    return run_student(backend, to_tensor(content), encode_style(backend, to_tensor(style)))[0]
