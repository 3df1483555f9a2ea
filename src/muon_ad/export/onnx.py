"""The student as two ONNX graphs, exported with torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`).

- `style.onnx`: prepared style images (B, 3, s, s), s = `style_size` (any s when it is None) → style tokens. Run once per style, in fp32
  whatever the precision of the main graph (it is a few convolutions, never on the per-frame path).
- `model.onnx`: (content (B, 3, H, W), tokens) → stylised image (B, 3, H, W), H and W dynamic multiples of the
  network's stride. Padding to that stride stays *outside* the graph (`runtime.run_student` pads and crops):
  the student's own padding is a Python branch on the input's size, which an exported graph freezes (a graph
  traced at 64×64 then refuses 200×184). Exporting with H = stride·h makes the branch provably untaken.

The stem is exported as one strided convolution, the same function as the student's pixel-unshuffle + 3×3 conv
(`strided_stem`): ONNX Runtime ran the unshuffle as a 6-D Transpose of the full-resolution image, 3.3-3.9 ms of the
edge student's ~37 at 512 px (2 threads, the slowest node of the graph). torch runs both forms equally fast (36.0 vs
35.6 ms at 256 px, 122.5 vs 122.9 at 512), so the torch student keeps its own.

Why dynamo: the legacy TorchScript exporter failed on `torch.atanh` (no longer in the student's head) and fails on the style
encoder's adaptive pooling. Each graph is one self-contained file (`external_data=False`): the student is
a few MB, and one file is what ONNX Runtime and TensorRT's `trtexec --onnx=` take.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from muon_ad.models.student import Student, pad_to_multiple

MODEL, STYLE, CONFIG = "model.onnx", "style.onnx", "export.json"  # CONFIG: what a runtime needs to know
MAX_SIDE = 8192  # the graph's height and width bound (torch.export needs one; far above any real frame)
ANY_STYLE_SIZE = 64  # the size a style graph that takes any size (style_size None) is traced at


@torch.no_grad()
def strided_stem(stem: nn.Sequential) -> nn.Conv2d:
    """The student's stem (PixelUnshuffle(s), then a k×k conv, padding p, on the s×s cells) as one conv of the image
    with kernel k·s, stride s and padding p·s: the same weights, each folded channel c·s² + dy·s + dx moved to the
    pixel (dy, dx) of its cell."""
    unshuffle, conv = stem
    s, (k, _) = unshuffle.downscale_factor, conv.kernel_size
    out, folded = conv.weight.shape[:2]
    strided = nn.Conv2d(folded // (s * s), out, k * s, stride=s, padding=conv.padding[0] * s,
                        bias=conv.bias is not None)
    # weight axes (out, c, dy, dx, ky, kx) → (out, c, ky, dy, kx, dx): kernel row ky·s + dy, column kx·s + dx
    strided.weight.copy_(conv.weight.view(out, -1, s, s, k, k).permute(0, 1, 4, 2, 5, 3).reshape(strided.weight.shape))
    if conv.bias is not None:
        strided.bias.copy_(conv.bias)
    return strided


class _StyledUNet(nn.Module):
    """(content, tokens) → image: the student's per-frame pass, for style tokens computed once, with its stem as one
    strided conv (a copy: the student itself is unchanged)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = copy.deepcopy(student)
        self.student.stem = strided_stem(student.stem)

    def forward(self, content: Tensor, tokens: Tensor) -> Tensor:
        return self.student.apply_style(content, tokens)


def _export(module: nn.Module, args: tuple[Tensor, ...], names: list[str], dynamic: dict, path: Path) -> None:
    # The exporter prints its progress and warns about torchvision ops it cannot find; neither concerns the user.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "onnxscript", "onnx_ir"):
            logging.getLogger(name).setLevel(logging.ERROR)
        program = torch.onnx.export(module, args, dynamo=True, external_data=False, input_names=names[:-1],
                                    output_names=names[-1:], dynamic_shapes=dynamic, optimize=True)
    program.save(str(path), external_data=False)


@torch.no_grad()
def export_onnx(student: Student, folder: str | Path) -> tuple[Path, Path]:
    """Write `folder/model.onnx` and `folder/style.onnx` (fp32) of `student`; returns their paths."""
    folder, cfg = Path(folder), student.config
    student = student.eval().cpu()
    stride = cfg.downsampling
    style = torch.zeros(1, 3, cfg.style_size or ANY_STYLE_SIZE, cfg.style_size or ANY_STYLE_SIZE)
    tokens = student.style_encoder(style)
    style_shapes = {0: torch.export.Dim("batch")}
    if cfg.style_size is None:  # the style encoded as given: any size
        style_shapes.update({2: torch.export.Dim("style_height", min=8, max=MAX_SIDE),
                             3: torch.export.Dim("style_width", min=8, max=MAX_SIDE)})
    content = torch.zeros(1, 3, 2 * stride, 3 * stride)  # unequal sides: no accidental height/width symmetry
    batch = torch.export.Dim("batch")
    height = stride * torch.export.Dim("height_blocks", min=1, max=MAX_SIDE // stride)
    width = stride * torch.export.Dim("width_blocks", min=1, max=MAX_SIDE // stride)
    _export(_StyledUNet(student), (content, tokens), ["content", "tokens", "image"],
            {"content": {0: batch, 2: height, 3: width}, "tokens": {0: batch}}, folder / MODEL)
    _export(student.style_encoder, (style,), ["style", "tokens"], {"style": style_shapes}, folder / STYLE)
    return folder / MODEL, folder / STYLE


def session(path: str | Path, threads: int | None = None, providers: Sequence[str] = ("CPUExecutionProvider",),
            profile_prefix: str | None = None):
    """An ONNX Runtime session of `path` (`threads`: intra-op threads; None: ORT's default; `profile_prefix`: ORT's
    profiler on, its JSON written under that prefix by `end_profiling()`).

    Its idle threads sleep instead of spinning for the next op (ORT's default): beside other sessions or torch in the
    same process, spinning threads took the cores from whichever ran next (interleaved at 256 px, 2 threads, the fp32
    torch student ran at 96-114 ms beside spinning sessions, 27-37 ms beside sleeping ones), and a stream running
    alone was no faster for them (the edge student: 61 FPS at 256 px spinning, 80 FPS sleeping, one run each)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), options, providers=list(providers))


@torch.no_grad()
def graph_parity(student: Student, folder: str | Path, sizes: list[tuple[int, int]], seed: int = 0) -> dict:
    """Max abs difference between torch and the exported graphs of `folder` at each (height, width) of `sizes`
    (any sizes: the content is padded outside the graph, as the runtime does), on seeded random inputs."""
    folder, cfg = Path(folder), student.config
    model, style_graph = session(folder / MODEL, threads=1), session(folder / STYLE, threads=1)
    generator = torch.Generator().manual_seed(seed)
    side = cfg.style_size or ANY_STYLE_SIZE + 8  # not the size it was traced at
    style = torch.rand(1, 3, side, side, generator=generator) * 2 - 1
    tokens = student.eval().cpu().style_encoder(style)
    onnx_tokens = style_graph.run(None, {"style": style.numpy()})[0]
    report = {"style_max_abs_diff": float(np.abs(onnx_tokens - tokens.numpy()).max()), "sizes": {}}
    for height, width in sizes:
        content = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
        expected = student.apply_style(content, tokens).numpy()
        padded = pad_to_multiple(content, cfg.downsampling).numpy()
        got = model.run(None, {"content": padded, "tokens": tokens.numpy()})[0][..., :height, :width]
        report["sizes"][f"{height}x{width}"] = float(np.abs(got - expected).max())
    report["max_abs_diff"] = max([report["style_max_abs_diff"], *report["sizes"].values()])
    return report


def to_fp16(source: str | Path, target: str | Path) -> Path:
    """An fp16 copy of the graph at `source` with fp32 inputs and outputs (ONNX Runtime's float16 converter),
    for GPUs and TensorRT; ONNX Runtime's CPU provider runs few fp16 kernels (it inserts casts around the rest)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return Path(target)
