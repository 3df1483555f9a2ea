"""`muon-ad export`: a trained student → a self-contained folder that ONNX Runtime (or TensorRT) runs.

    model.onnx    (content, tokens) → image, at `precision`: fp32, fp16 (GPUs / TensorRT) or int8 (QDQ,
                  convolutions only: `compress.quant`), heights and widths any multiple of the stride
    style.onnx    prepared style image → tokens, fp32 (once per style)
    export.json   what a runtime needs: stride, style size and preprocessing, precision, the student's config
    report.json   parity (max abs diff of the fp32 graphs vs torch, at two sizes off the stride) and quality
                  (SSIM of the exported student vs the torch fp32 student on held-out pairs), calibration settings
    checksums.json

The folder is written to a temporary folder and renamed at the end: a failure leaves no half export.
`runtime.load_backend(folder)` runs it through the same interface as the torch student.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from muon_ad.checks import one_of, replaceable_folder, within
from muon_ad.compress.quant import CALIBRATION_METHODS, calibration_feeds, calibration_pairs, has_vnni, quantize_int8
from muon_ad.eval.quality import ssim
from muon_ad.export.onnx import CONFIG, MAX_SIDE, MODEL, STYLE, export_onnx, graph_parity, to_fp16
from muon_ad.io import write_checksums, write_folder_atomic
from muon_ad.models.student import Student, load_student
from muon_ad.runtime.backends import OnnxStudent, TorchStudent, encode_style, run_student

PRECISIONS = ("fp32", "fp16", "int8")
PARITY_SIZES = [(200, 184), (37, 53)]  # neither a multiple of any stride: padding outside the graph is exercised
QUALITY_PAIRS = 16  # held-out pairs (after the calibration pairs) on which the export's SSIM vs torch is measured
STYLE_PREPROCESSING = ("RGB float in [-1, 1], (B, 3, s, s): centre-crop the style to a square, resize to s = style_size "
                       "(bilinear, antialiased; style_size null: as given), then style.onnx; the content is padded (edge replicated) on the "
                       "bottom and right to a multiple of `multiple`, run, cropped back and clamped to [-1, 1]")


def export_student(
    student: str | Path | Student, out: str | Path, precision: str = "fp32", calibration: int = 256,
    method: str = "percentile", reduce_range: bool | None = None, size: int = 64, content: str = "scenes",
    content_path: str | None = None, style: str = "textures", style_path: str | None = None, seed: int = 0,
    reuse: str | Path | None = None,
) -> Path:
    """Export `student` (a folder or a model) to the folder `out` at `precision`; int8 is calibrated on
    `calibration` (content, style) pairs of `size` px from the distillation data sources. `reuse`: an fp32 export
    folder of this same student, whose graphs are copied instead of exported again (the exporter takes tens of
    seconds; their parity with this student is measured all the same). Returns `out`."""
    replaceable_folder("--out", out, CONFIG)
    one_of("--precision", precision, PRECISIONS)
    one_of("--calibration-method", method, CALIBRATION_METHODS)
    within("--calibration", calibration, 1)
    model = student if isinstance(student, Student) else load_student(student)
    count = (calibration if precision == "int8" else 0) + QUALITY_PAIRS
    contents, styles = calibration_pairs(count, size, seed, content, content_path, style, style_path)
    reduce = (not has_vnni()) if reduce_range is None else reduce_range

    def write(folder: Path) -> None:
        start = time.perf_counter()
        if reuse is None:
            export_onnx(model, folder)
        else:
            for name in (MODEL, STYLE):
                shutil.copy(Path(reuse) / name, folder / name)
        report = {"parity": graph_parity(model, folder, PARITY_SIZES), "precision": precision}
        fp32 = folder / MODEL
        if precision != "fp32":
            fp32 = fp32.rename(folder / ".model-fp32.onnx")
            if precision == "fp16":
                to_fp16(fp32, folder / MODEL)
            else:
                feeds = calibration_feeds(model, contents[:calibration], styles[:calibration])
                quantize_int8(fp32, folder / MODEL, feeds, method, reduce)
                report["calibration"] = {"pairs": calibration, "method": method, "size": size, "content": content,
                                         "style": style, "reduce_range": reduce, "cpu_has_vnni": has_vnni(),
                                         "quantised_ops": "Conv (per-channel symmetric int8 weights, uint8 activations), "
                                                          "all but the stem's conv of the image (fp32)"}
            fp32.unlink()
        config = {"format": "muon-ad-onnx", "precision": precision, "multiple": model.config.downsampling,
                  "style_size": model.config.style_size, "max_side": MAX_SIDE, "inputs": {
                      "model.onnx": ["content (B,3,H,W)", "tokens (B,T,D)"], "style.onnx": ["style (B,3,s,s)"]},
                  "style_preprocessing": STYLE_PREPROCESSING, "student": asdict(model.config),
                  "widths": model.widths}  # a compacted student's per-layer widths (None: the config's own)
        (folder / CONFIG).write_text(json.dumps(config, indent=2))
        report["quality"] = export_quality(model, OnnxStudent(folder, threads=1), contents[-QUALITY_PAIRS:],
                                           styles[-QUALITY_PAIRS:])
        report["files_mb"] = {p.name: p.stat().st_size / 1e6 for p in sorted(folder.glob("*.onnx"))}
        report["seconds"] = time.perf_counter() - start
        (folder / "report.json").write_text(json.dumps(report, indent=2))
        write_checksums(folder)

    return write_folder_atomic(out, write)


@torch.no_grad()
def export_quality(student: Student, exported: OnnxStudent, contents: torch.Tensor, styles: torch.Tensor) -> dict:
    """SSIM (and max abs diff) of the exported student's images vs the torch fp32 student's, same pairs."""
    reference, candidate = TorchStudent(student), exported
    ours, theirs = [], []
    for content, style in zip(contents, styles):
        for backend, images in ((reference, theirs), (candidate, ours)):
            images.append(run_student(backend, content, encode_style(backend, style)))
    ours, theirs = torch.cat(ours), torch.cat(theirs)
    return {"ssim_vs_fp32": ssim(ours, theirs), "max_abs_diff_vs_fp32": float((ours - theirs).abs().max()),
            "pairs": len(contents), "size": list(contents.shape[-2:])}
