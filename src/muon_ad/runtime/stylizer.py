"""Stylise a stream of frames with a trained student, one fixed style, skipping frames that barely changed.

The student is any `StudentBackend` (torch, or an exported ONNX file run by ONNX Runtime), so the same loop
measures both runtimes. The style is encoded once for the whole stream.

Change skipping: a still camera produces runs of near-identical frames, and stylising each again costs
a full forward pass for an output nobody can tell apart. A frame whose mean absolute difference from
the last frame that *was* stylised is below `skip_threshold` reuses that frame's output. Comparing with
the last stylised frame, not the previous frame, matters: a slow pan changes each frame a little, and
compared frame to frame it would be skipped forever while the picture drifts away from the output.
"""

from __future__ import annotations

import torch
from torch import Tensor

from muon_ad.runtime.backends import StudentBackend, encode_style, run_student


class Stylizer:
    """`stylizer(frame) -> stylised frame` for (3,H,W) frames; `skipped` says whether the last call reused."""

    def __init__(self, backend: StudentBackend, style: Tensor, skip_threshold: float = 0.0) -> None:
        self.backend, self.skip_threshold = backend, skip_threshold
        self.code = encode_style(backend, style)
        self.skipped = False
        self._last_input: Tensor | None = None
        self._last_output: Tensor | None = None

    @torch.inference_mode()
    def __call__(self, frame: Tensor) -> Tensor:
        self.skipped = (
            self._last_input is not None
            and self._last_input.shape == frame.shape
            and (frame - self._last_input).abs().mean().item() < self.skip_threshold
        )
        if not self.skipped:
            self._last_input = frame
            self._last_output = run_student(self.backend, frame, self.code)[0]
        return self._last_output
