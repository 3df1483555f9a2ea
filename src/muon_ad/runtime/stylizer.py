"""Stylise a stream of frames with a trained student, one fixed style, skipping frames that barely changed.

The model is anything that maps (content (B,3,H,W), style (B,3,h,w)) in [-1,1] to an image in [-1,1]: the
torch student, or an exported ONNX file run by ONNX Runtime (`OnnxModel`), so the same loop measures
both runtimes.

Change skipping: a still camera produces runs of near-identical frames, and stylising each again costs
a full forward pass for an output nobody can tell apart. A frame whose mean absolute difference from
the last frame that *was* stylised is below `skip_threshold` reuses that frame's output. Comparing with
the last stylised frame, not the previous frame, matters: a slow pan changes each frame a little, and
compared frame to frame it would be skipped forever while the picture drifts away from the output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from muon_ad.errors import UserError

Model = Callable[[Tensor, Tensor], Tensor]


class OnnxModel:
    """An exported student run by ONNX Runtime on CPU; inputs are fed by position (content, style)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
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

    def __call__(self, content: Tensor, style: Tensor) -> Tensor:
        feed = {name: np.ascontiguousarray(x.float().numpy()) for name, x in zip(self.inputs, (content, style))}
        return torch.from_numpy(self.session.run(None, feed)[0])


def default_student() -> Path:
    """Where `muon-ad distill` saves its student by default (the recipe's own out_dir, so they cannot drift)."""
    from muon_ad.recipes.distill import DistillTrainConfig

    return Path(DistillTrainConfig().out_dir) / "student"


def load_model(path: str | Path, device: str = "cpu") -> Model:
    """A student folder (torch) or an exported `.onnx` file (ONNX Runtime, CPU only)."""
    if str(path).endswith(".onnx"):
        if device != "cpu":
            raise UserError("the ONNX Runtime path runs on cpu here; use the student folder for --device cuda")
        return OnnxModel(path)
    from muon_ad.models.student import load_student

    return load_student(path).to(device).eval()


class Stylizer:
    """`stylizer(frame) -> stylised frame` for (3,H,W) frames; `skipped` says whether the last call reused."""

    def __init__(self, model: Model, style: Tensor, skip_threshold: float = 0.0, device: str = "cpu") -> None:
        self.device, self.skip_threshold = device, skip_threshold
        style = style.unsqueeze(0).to(device)
        if hasattr(model, "encode_style"):  # the torch student: encode the style once for the whole stream
            with torch.inference_mode():
                tokens = model.encode_style(style)
            self._run: Callable[[Tensor], Tensor] = lambda content: model.stylize(content, tokens)
        else:
            self._run = lambda content: model(content, style)
        self.skipped = False
        self._last_input: Tensor | None = None
        self._last_output: Tensor | None = None

    @torch.inference_mode()
    def __call__(self, frame: Tensor) -> Tensor:
        frame = frame.to(self.device)
        self.skipped = (
            self._last_input is not None
            and self._last_input.shape == frame.shape
            and (frame - self._last_input).abs().mean().item() < self.skip_threshold
        )
        if not self.skipped:
            self._last_input = frame
            self._last_output = self._run(frame.unsqueeze(0))[0].clamp(-1, 1)
        return self._last_output
