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

import copy
import json
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
from muon_ad.export.onnx import CONFIG, MODEL, STYLE, session
from muon_ad.io import CHECKSUMS, checksum_problem
from muon_ad.models.student import Student, load_student, pad_to_multiple


class StudentBackend(Protocol):
    multiple: int  # content height and width must be multiples of this (the network's total stride)
    style_size: int | None  # style images are encoded at this square size (None: as given)

    def style_code(self, styles: Tensor) -> Tensor:
        """(B,3,s,s) prepared style images → what `run` takes as the style."""

    def run(self, contents: Tensor, code: Tensor) -> Tensor:
        """(B,3,H,W) contents, H and W multiples of `multiple`, and a style code (batch 1 or B) → (B,3,H,W)."""


class TorchStudent:
    """A trained `Student` in torch: the style code is its style tokens. On the CPU it runs a channels-last copy
    (the caller's student is left as it is): oneDNN's convolutions then take their weights and activations without
    reordering them every call. Measured (2-vCPU VM, 2 threads, 256 px, four interleaved runs of a one-off script,
    docs/measurements.md): the CPU-preset student +2 to −21 % of its time, the edge-pruned one −13 to −37 %;
    a channels-last input alone (weights as they were) was no faster. Not measured on a GPU, so there the student
    runs as given."""

    def __init__(self, student: Student, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        if self.memory_format == torch.channels_last:
            student = copy.deepcopy(student).to(memory_format=self.memory_format)
        self.student = student.to(self.device).eval()
        self.multiple, self.style_size = student.config.downsampling, student.config.style_size

    @torch.inference_mode()
    def style_code(self, styles: Tensor) -> Tensor:
        return self.student.encode_style(styles.to(self.device))

    @torch.inference_mode()
    def run(self, contents: Tensor, code: Tensor) -> Tensor:
        return self.student.apply_style(contents.to(self.device, memory_format=self.memory_format), code)


class OnnxStudent:
    """An exported student folder (`muon-ad export`: style.onnx, model.onnx, export.json) run by ONNX Runtime: the
    style code is the style graph's tokens. Providers: CPU, or on `device="cuda"` TensorRT / CUDA where installed."""

    def __init__(self, folder: str | Path, threads: int | None = None, device: str = "cpu") -> None:
        import onnxruntime as ort

        folder = Path(folder)
        if not (folder / CONFIG).is_file():
            raise UserError(f"not an exported student folder (needs {CONFIG}, {MODEL}, {STYLE}; "
                            f"make one with muon-ad export): {folder}")
        if (folder / CHECKSUMS).is_file() and (problem := checksum_problem(folder, (CONFIG, MODEL, STYLE))):
            raise UserError(f"exported student {folder} is corrupt: {problem}")
        try:
            self.config = json.loads((folder / CONFIG).read_text())
            self.multiple, self.style_size = int(self.config["multiple"]), (None if self.config["style_size"] is None else int(self.config["style_size"]))
            self.max_side = int(self.config["max_side"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            raise UserError(f"{folder / CONFIG} is not a valid export config") from None
        providers = ["CPUExecutionProvider"]
        if device != "cpu":
            accelerated = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
                           if p in ort.get_available_providers()]
            if not accelerated:
                raise UserError(f"--device {device}: this ONNX Runtime has no CUDA or TensorRT provider "
                                "(install onnxruntime-gpu), run the exported student on cpu")
            providers = accelerated + providers
        self.precision = self.config.get("precision", "fp32")
        self.model, self.style = (_session(folder / name, threads, providers) for name in (MODEL, STYLE))

    def style_code(self, styles: Tensor) -> Tensor:
        return torch.from_numpy(self.style.run(None, {"style": _array(styles)})[0])

    def run(self, contents: Tensor, code: Tensor) -> Tensor:
        height, width = contents.shape[-2:]
        if height % self.multiple or width % self.multiple or max(height, width) > self.max_side:
            raise UserError(f"the exported graph takes heights and widths that are multiples of {self.multiple} up to "
                            f"{self.max_side}, got {height}x{width} (run_student pads to the multiple)")
        code = code.expand(contents.shape[0], *code.shape[1:])
        return torch.from_numpy(self.model.run(None, {"content": _array(contents), "tokens": _array(code)})[0])


def _array(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


def _session(path: Path, threads: int | None, providers: list[str]):
    try:
        return session(path, threads, providers)
    except Exception as error:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...) for a bad file
        raise UserError(f"{path} does not load in ONNX Runtime: {str(error).splitlines()[0][:200]}") from None


def default_student() -> Path:
    """The student `muon-ad distill` (or `make demo`) saved by default, as found (`muon_ad.default_path`)."""
    return default_path(DEFAULT_STUDENT)


def load_backend(path: str | Path, device: str = "cpu", threads: int | None = None) -> StudentBackend:
    """A student folder (torch), or an exported one (`muon-ad export`, ONNX Runtime; also named by its model.onnx)."""
    path = Path(path)
    folder = path.parent if path.suffix == ".onnx" else path
    if (folder / CONFIG).is_file() or path.suffix == ".onnx":
        return OnnxStudent(folder, threads=threads, device=device)
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
