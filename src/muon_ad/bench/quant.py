"""`muon-ad bench quant`: the fp32 torch student vs its fp32 and int8 ONNX Runtime exports, PTQ vs QAT, and the
pruned + int8 edge student, on the same images in one run.

- Latency: one frame at `resolution` through each backend (`runtime.run_student`), medians over blocks of
  consecutive frames, the backends taking turns block by block (`eval.profile.interleaved_ms`); the same thread
  count for torch and ONNX Runtime: torch's (every core, or OMP_NUM_THREADS; it is in the JSON).
  latency_ratio_ort = int8 ORT / fp32 ORT; latency_ratio_torch = int8 ORT / fp32 torch;
  edge_latency_ratio = pruned + int8 ORT / fp32 torch.
- Size: bytes of the per-frame graph (model.onnx) int8 / fp32 (size_ratio), pruned int8 / fp32 (edge_size_ratio).
- Quality: SSIM of the int8 images vs the fp32 torch student's on held-out built-in pairs at `resolution`:
  ssim_vs_fp32 (PTQ), ssim_vs_fp32_qat (PTQ of the student trained with phase-3 QAT, vs that student's fp32).
  Every calibration method (minmax / percentile / entropy), with and without reduce_range, is scored the same way.
- The do-nothing baseline: the content image itself scored against the fp32 output (`ssim_identity_vs_fp32`),
  so the SSIM figures are seen to be far above what a student that changes nothing gets.
- The edge student's quality: its int8 images vs its own fp32 torch images (`ssim_vs_fp32_edge`), beside the content
  scored the same way (`ssim_identity_vs_fp32_edge`); what pruning costs is `bench prune`'s.
- Pictures: bench-results/quant[-quick]-samples.png, six held-out pairs through every student above.

Students: the trained one (`runs/stylize-cpu/student`) and its QAT twin (`runs/stylize-cpu-qat/student`:
`muon-ad distill configs/stylize-cpu.yaml curriculum.joint_optimisation.qat=true train.out_dir=runs/stylize-cpu-qat`).
Without a trained student, a fresh one with a random head (a fresh head is zero: the identity map, nothing to lose).
The edge student is the trained one through the edge path as a user runs it: `muon-ad prune` (`recipes.compress.prune`)
at EDGE_KEEP and EDGE_ATTENTION_BLOCKS, entropy criterion, with EDGE_FINETUNE_STEPS of recovery fine-tune on its run's
AD-target bank (`--quick`: 4), then the same int8 export. A fresh student has no run to fine-tune on: it is pruned only.
`bench realtime` and `bench memory` time the pruned student without its fine-tune (the same graph, other weights).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from muon_ad import DEFAULT_DISTILL_DIR
from muon_ad.bench.common import SEED, BenchOutput, median, trained_student
from muon_ad.compress.prune import EDGE_ATTENTION_BLOCKS, EDGE_FINETUNE_STEPS, EDGE_KEEP, prune_student
from muon_ad.compress.quant import CALIBRATION_METHODS, calibration_pairs, has_vnni
from muon_ad.eval.profile import BLOCK, interleaved_ms
from muon_ad.eval.quality import ssim
from muon_ad.data.images import save_image_atomic
from muon_ad.export.onnx import MODEL
from muon_ad.models.student import Student, StudentConfig, load_student
from muon_ad.recipes.compress import prune
from muon_ad.recipes.export import export_student
from muon_ad.runtime.backends import OnnxStudent, StudentBackend, TorchStudent, encode_style, run_student
from muon_ad.visual import image_grid

QAT_STUDENT = Path(f"{DEFAULT_DISTILL_DIR}-qat") / "student"
QAT_INT8 = "QAT student int8"  # its row in the samples


def bench_student(path: Path | None) -> tuple[Student, str]:
    """The trained student (or a fresh one with a random head) and what it is, for the JSON."""
    if path is not None:
        return load_student(path), str(path)
    torch.manual_seed(SEED)
    student = Student(StudentConfig()).eval()
    torch.nn.init.normal_(student.output_layer.weight, std=0.02)
    return student, "fresh default StudentConfig() with a random head (no trained student)"


def images(backend: StudentBackend, contents: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    return torch.cat([run_student(backend, c, encode_style(backend, s)) for c, s in zip(contents, styles)])


def edge_student(student: Student, contents: torch.Tensor, styles: torch.Tensor) -> tuple[Student, str]:
    """The student pruned to EDGE_KEEP of its channels and EDGE_ATTENTION_BLOCKS transformer blocks by the entropy
    criterion, without a recovery fine-tune (its graph, for timing), and what it is."""
    batches = [(contents[i : i + 8], styles[i : i + 8]) for i in range(0, len(contents), 8)]
    return (prune_student(student, EDGE_KEEP, batches, "entropy", EDGE_ATTENTION_BLOCKS),
            f"prune_student keep {EDGE_KEEP}, {EDGE_ATTENTION_BLOCKS} transformer block(s), entropy, no fine-tune")


def finetuned_edge_student(student_path: Path, steps: int, root: Path) -> tuple[Student, str]:
    """The trained student at `student_path` through `muon-ad prune` at the edge path's setting with `steps` of
    recovery fine-tune, and what it is."""
    folder = prune(student_path, EDGE_KEEP, root / "pruned", "entropy", steps, attention_blocks=EDGE_ATTENTION_BLOCKS)
    return load_student(folder), (f"muon-ad prune --keep {EDGE_KEEP} --attention-blocks {EDGE_ATTENTION_BLOCKS} "
                                  f"--criterion entropy --finetune-steps {steps}")


def int8_exports(student: Student, root: Path, calibration: int, size: int) -> tuple[Path, Path]:
    """(fp32 export folder, int8 export folder reusing its graphs) of `student` under `root`: the int8 export is
    `muon-ad export --precision int8` with its defaults, calibrated on the seeded pairs the benchmark holds out from."""
    fp32 = export_student(student, root / "fp32", "fp32", size=size, seed=SEED)
    return fp32, export_student(student, root / "int8", "int8", calibration, size=size, seed=SEED, reuse=fp32)


def deployed_students(student_path: Path | None, root: Path, size: int, calibration: int = 64,
                      edge: bool = True) -> tuple[dict, dict]:
    """({"int8": folder, "edge": folder}, notes): the int8 export of the student and (`edge`) of its pruned version,
    for `bench realtime` and `bench memory`."""
    student, _ = bench_student(student_path)
    folders, notes = {"int8": int8_exports(student, root / "int8", calibration, size)[1]}, {}
    if not edge:
        return folders, notes
    contents, styles = calibration_pairs(calibration, size, seed=SEED)
    edge, notes["edge"] = edge_student(student, contents, styles)
    folders["edge"] = int8_exports(edge, root / "edge", calibration, size)[1]
    return folders, notes


def measure(student_path: Path | None, qat_path: Path | None, resolution: int, calibration: int, repeats: int,
            finetune_steps: int, root: Path, samples: Path) -> BenchOutput:
    threads = torch.get_num_threads()
    student, described = bench_student(student_path)
    contents, styles = calibration_pairs(calibration + 16, resolution, seed=SEED)
    held_contents, held_styles = contents[-16:], styles[-16:]
    fp32_dir, int8_dir = int8_exports(student, root / "ptq", calibration, resolution)
    torch_fp32, ort_fp32, ort_int8 = TorchStudent(student), OnnxStudent(fp32_dir, threads), OnnxStudent(int8_dir, threads)
    reference, int8_images = (images(b, held_contents, held_styles) for b in (torch_fp32, ort_int8))
    metrics: dict[str, float | None] = {
        "ssim_vs_fp32": ssim(int8_images, reference),
        "ssim_fp32_ort_vs_torch": ssim(images(ort_fp32, held_contents, held_styles), reference),
        "ssim_identity_vs_fp32": ssim(held_contents, reference),
        "size_ratio": (int8_dir / MODEL).stat().st_size / (fp32_dir / MODEL).stat().st_size,
    }
    # Calibration methods and reduce_range, each exported the same way and scored on the same held-out pairs.
    methods = {}
    for method in CALIBRATION_METHODS:
        for reduce in (False, True):
            name = f"{method}{'_reduce_range' if reduce else ''}"
            trial = export_student(student, root / "methods" / name, "int8", calibration, method, reduce,
                                   size=resolution, seed=SEED, reuse=fp32_dir)
            methods[name] = ssim(images(OnnxStudent(trial, threads), held_contents, held_styles), reference)
    metrics.update({f"ssim_vs_fp32_{name}": value for name, value in methods.items()})
    best = max(methods, key=methods.get)

    notes = {}
    edge, notes["edge"] = (finetuned_edge_student(student_path, finetune_steps, root / "edge") if student_path
                           else edge_student(student, contents[:calibration], styles[:calibration]))
    _, edge_int8 = int8_exports(edge, root / "edge", calibration, resolution)
    backends = {"torch_fp32": torch_fp32, "ort_fp32": ort_fp32, "ort_int8": ort_int8,
                "edge_int8": OnnxStudent(edge_int8, threads)}
    metrics["edge_size_ratio"] = (edge_int8 / MODEL).stat().st_size / (fp32_dir / MODEL).stat().st_size
    edge_fp32, edge_images = (images(backend, held_contents, held_styles)
                              for backend in (TorchStudent(edge), backends["edge_int8"]))
    outputs = {"torch fp32": reference, "int8 (PTQ)": int8_images, "edge fp32 (pruned)": edge_fp32,
               "edge int8": edge_images}  # the samples' rows
    metrics["ssim_vs_fp32_edge"] = ssim(edge_images, edge_fp32)
    metrics["ssim_identity_vs_fp32_edge"] = ssim(held_contents, edge_fp32)

    # Latency: one frame at the resolution, the backends interleaved block by block.
    frame, codes = held_contents[:1], {name: encode_style(b, held_styles[0]) for name, b in backends.items()}
    calls = {name: (lambda b=backend, c=codes[name]: run_student(b, frame, c)) for name, backend in backends.items()}
    times = interleaved_ms(calls, repeats)
    ms = {name: median(values) for name, values in times.items()}
    metrics.update({f"{name}_ms": value for name, value in ms.items()})
    metrics["latency_ratio_ort"] = ms["ort_int8"] / ms["ort_fp32"]
    metrics["latency_ratio_torch"] = ms["ort_int8"] / ms["torch_fp32"]
    metrics["edge_latency_ratio"] = ms["edge_int8"] / ms["torch_fp32"]

    # PTQ of the QAT-trained twin, vs its own fp32.
    metrics["ssim_vs_fp32_qat"] = None
    if qat_path is not None:
        qat = load_student(qat_path)
        _, qat_int8 = int8_exports(qat, root / "qat", calibration, resolution)
        qat_reference = images(TorchStudent(qat), held_contents, held_styles)
        outputs[QAT_INT8] = images(OnnxStudent(qat_int8, threads), held_contents, held_styles)
        metrics["ssim_vs_fp32_qat"] = ssim(outputs[QAT_INT8], qat_reference)
        metrics["ssim_qat_int8_vs_plain_fp32"] = ssim(outputs[QAT_INT8], reference)
    else:
        notes["qat"] = f"no QAT-trained student at {QAT_STUDENT} (see the module docstring for the command)"
    metrics["resolution"] = resolution
    n = 6
    tiles = torch.cat([held_contents[:n], held_styles[:n], *(batch[:n] for batch in outputs.values())])
    labels = ["content"] * n + ["style"] * n + [name for name in outputs for _ in range(n)]
    save_image_atomic(image_grid(tiles, labels, ncols=n, scale=1), samples)
    config = {"student": described, "qat_student": str(qat_path) if qat_path else None, "resolution": resolution,
              "threads": threads, "calibration_pairs": calibration, "calibration_size": resolution, "held_out_pairs": 16,
              "calibration_method_export": "percentile", "best_calibration_method": best,
              "cpu_has_vnni": has_vnni(), "reduce_range_export": not has_vnni(), "quantised_ops": "Conv, all but the stem's conv of the image",
              "repeats": repeats, "timing": f"blocks of {BLOCK} frames, taking turns", "edge_keep": EDGE_KEEP,
              "edge_attention_blocks": EDGE_ATTENTION_BLOCKS, "samples": str(samples), "notes": notes}
    baseline = (f"the fp32 torch student (and its fp32 ONNX Runtime export) at {resolution} px, {threads} thread(s), "
                "same frames; quality vs the fp32 torch student's images on 16 held-out built-in pairs")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline, repeats=times)


def run(quick: bool, device: str) -> BenchOutput:
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as root:
        return measure(trained_student(), QAT_STUDENT if (QAT_STUDENT / "config.json").is_file() else None,
                       128 if quick else 256, 32 if quick else 256, 5 if quick else 30,
                       4 if quick else EDGE_FINETUNE_STEPS, Path(root),
                       Path("bench-results") / f"quant{'-quick' if quick else ''}-samples.png")
