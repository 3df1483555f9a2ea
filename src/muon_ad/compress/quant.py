"""Mixed-precision int8 post-training quantisation (PTQ) of an exported student, by ONNX Runtime.

The scheme (shared/DESIGN.md §1.8): convolutions in int8, weights symmetric per output channel, activations
per tensor (uint8, asymmetric: they follow GELUs and skips, far from symmetric); attention (the matmuls,
softmax) and the norms stay fp32. ONNX Runtime's static quantiser writes QDQ pairs (QuantizeLinear /
DequantizeLinear) around each convolution, the form both ONNX Runtime's int8 kernels and TensorRT consume.
Activation ranges come from a calibration set of real (content, style) pairs of the distillation data.

Two exceptions, measured (edge student, 512 px, 2 threads, one run): the stem's convolution, which reads the image
itself, stays fp32. In int8 ONNX Runtime quantises and transposes the full-resolution image for it, and runs a
3-channel NHWC convolution; fp32 runs it as one NCHWc convolution: 36.2 → 32.5 ms for the graph (its fp32
weights add 41 kB to the CPU preset's 4.9 MB int8 graph). And a `Shape` that reads a dequantised tensor is made to read the
quantised one (same shape): otherwise ONNX Runtime dequantises a whole activation only to take its shape, 12 times
in the edge graph (dequantisation kernels 2.6 → 2.1 ms per frame).

Why not quantise everything: the convolutions hold 68 % of the CPU preset's weights and most of its FLOPs;
softmax and normalisation statistics are where int8 loses most and gains least.

`reduce_range`: x86 int8 kernels multiply uint8 activations by int8 weights. Without VNNI (AVX2 only) the
pairwise products are summed in int16 (`vpmaddubsw`), which saturates unless weights use 7 bits; ONNX
Runtime's `reduce_range=True` does that (measured on an AVX2 machine: SSIM vs fp32 0.85 without, 0.99 with).
VNNI CPUs (`avx512_vnni` / `avx_vnni`) accumulate in int32 and keep the 8th bit, so the default follows the CPU.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from muon_ad.distill.data import load_bank, open_source
from muon_ad.errors import UserError
from muon_ad.models.student import Student, pad_to_multiple

if TYPE_CHECKING:
    import onnx

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.99  # the design's calibration percentile
QUANTISED_OPS = ("Conv",)  # everything else (MatMul of attention, Softmax, norms, GELU) stays fp32


def has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has VNNI int8 dot products (AVX512-VNNI or AVX-VNNI); False where it cannot tell."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_vnni", "avx_vnni"} & set(flags))


def calibration_pairs(count: int, size: int, seed: int = 0, content: str = "scenes", content_path: str | None = None,
                      style: str = "textures", style_path: str | None = None) -> tuple[Tensor, Tensor]:
    """`count` (content, style) pairs of distillation data at `size` px, floats in [-1, 1]: content i with a seeded
    random style. Sources as in `distill.data` (built-in sets or folders; a folder without one usable image is a
    one-line error, unreadable files among usable ones are skipped)."""
    banks = [load_bank(open_source(kind, path, count, size, seed + offset, role), count, seed + offset,
                       f"calibration {role}")
             for offset, (role, kind, path) in enumerate((("content", content, content_path),
                                                          ("style", style, style_path)))]
    contents, styles = (bank.batch(slice(None)) for bank in banks)
    pick = torch.randint(len(styles), (len(contents),), generator=torch.Generator().manual_seed(seed))
    return contents, styles[pick]


@torch.no_grad()
def calibration_feeds(student: Student, contents: Tensor, styles: Tensor) -> list[dict[str, np.ndarray]]:
    """One ONNX feed per pair for `model.onnx`: the content padded to the stride, the style's tokens."""
    student = student.eval().cpu()
    feeds = []
    for content, style in zip(contents, styles):
        tokens = student.encode_style(style[None])
        feeds.append({"content": pad_to_multiple(content[None], student.config.downsampling).numpy(),
                      "tokens": tokens.numpy()})
    return feeds


def quantize_int8(source: str | Path, target: str | Path, feeds: Sequence[dict[str, np.ndarray]],
                  method: str = "percentile", reduce_range: bool | None = None) -> Path:
    """Write the int8 QDQ model of the fp32 graph `source` to `target`, calibrated on `feeds` with `method`
    (minmax | percentile | entropy); `reduce_range` None follows the CPU (7-bit weights without VNNI)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise UserError(f"calibration method {method!r}: choose from {', '.join(CALIBRATION_METHODS)}")
    if not feeds:
        raise UserError("int8 quantisation needs at least one calibration pair")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.items, None)

    target = Path(target)
    prepared = target.with_name(f".{target.stem}.pre.onnx")  # folded constants, inferred shapes (ORT's advice)
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        inputs = {value.name for value in graph.input}
        on_the_image = [node.name for node in graph.node if node.op_type == "Conv" and node.input[0] in inputs]
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
            quantize_static(
                str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTISED_OPS),
                per_channel=True, reduce_range=not has_vnni() if reduce_range is None else reduce_range,
                nodes_to_exclude=on_the_image,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                  "entropy": CalibrationMethod.Entropy}[method],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "CalibPercentile": PERCENTILE},
            )
        model = onnx.load(str(target))
        shapes_from_quantized(model.graph)
        onnx.save(model, str(target))
    finally:
        prepared.unlink(missing_ok=True)
    return target


def shapes_from_quantized(graph: onnx.GraphProto) -> None:
    """Make every Shape that reads a DequantizeLinear's output read its (same-shaped) quantised input instead, in
    place."""
    producers = {output: node for node in graph.node for output in node.output}
    for node in graph.node:
        producer = producers.get(node.input[0]) if node.op_type == "Shape" else None
        if producer is not None and producer.op_type == "DequantizeLinear":
            node.input[0] = producer.input[0]
