"""The demo's stages, in the order they run; each calls the project's own components and saves its outputs in
DIR/<stage>/, and returns a `Stage` (status, time, note, results) for the report."""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from muon_ad import DEFAULT_STUDENT, DEFAULT_TEACHER, default_path
from muon_ad.bench import BENCHMARKS, ad_convergence, distill_convergence, memory, realtime
from muon_ad.bench import t2i as t2i_bench
from muon_ad.bench.common import sample_pair
from muon_ad.bench.prune import interleaved_latency
from muon_ad.config import load_config
from muon_ad.data.images import save_image_atomic, to_tensor
from muon_ad.demo.settings import T2I_CONFIG, TEACHER_CONFIG, DemoSettings
from muon_ad.eval.domain_features import DomainFeatures
from muon_ad.eval.profile import count_flops, count_parameters, measure_latency, median
from muon_ad.eval.recognition import train_judges
from muon_ad.eval.report import convergence_figure, save_figure, style_content_figure
from muon_ad.eval.style_strength import score_stylization, style_strength_ratio
from muon_ad.eval.stylization import (
    ad_stylize_pairs,
    builtin_domain_features,
    builtin_labelled_pairs,
    builtin_pairs,
    stylize_pairs,
)
from muon_ad.io import write_folder_atomic, write_text_atomic
from muon_ad.models.teacher import load_teacher
from muon_ad.recipes.distill import as_baseline, distill
from muon_ad.recipes.compress import prune
from muon_ad.recipes.distill_t2i import DistillT2IConfig, distill_t2i
from muon_ad.recipes.export import export_student
from muon_ad.recipes.train_teacher import TrainTeacherConfig, train_teacher
from muon_ad.runtime import FrameWriter, Stylizer, encode_style, load_backend, run_stream, run_student, synthetic_frames
from muon_ad.visual import image_grid


@dataclass
class Stage:
    name: str
    status: str = "done"  # "done", "not built yet", or "not run here" (built, but not part of the demo yet)
    seconds: float = 0.0
    note: str = ""
    results: dict = field(default_factory=dict)


def stage_teacher(s: DemoSettings, out: Path) -> tuple[Path, Stage]:
    """Quick: a tiny teacher trained into DIR, so the demo depends on nothing. Full: the built-in teacher, trained
    (once) where every command looks for it by default (`DEFAULT_TEACHER`), so the README's next commands find it."""
    found = default_path(DEFAULT_TEACHER)  # here, or where an earlier `make demo` left it (muon_ad.default_path)
    if not s.quick and (found / "unet").is_dir():
        samples = found.parent / "samples.png"
        return found, Stage("teacher", note=f"reused {found}",
                            results={"samples": str(samples) if samples.is_file() else None})
    run = out / "teacher" if s.quick else Path(DEFAULT_TEACHER).parent
    cfg = load_config(TrainTeacherConfig, TEACHER_CONFIG, s.teacher_overrides + [f"train.out_dir={run}"])
    folder = train_teacher(cfg)
    steps = cfg.train.vae_steps + cfg.train.unet_steps
    return folder, Stage("teacher", note=f"trained {steps} steps at {cfg.model.image_size} px into {folder}",
                         results={"samples": str(run / "samples.png"), "steps": steps,
                                  "folder": None if folder == Path(DEFAULT_TEACHER) else str(folder)})


def publish_student(s: DemoSettings, student: str) -> dict:
    """Full demo: the Muon-AD student is copied to DEFAULT_STUDENT, where `stream` (and the README's
    `stylize --student`) look by default, unless a student is there already (a user's own `muon-ad distill`, never
    overwritten). Quick: its student is a pipeline check, not a stylist, and stays in the report folder."""
    existing = default_path(DEFAULT_STUDENT)
    if s.quick or (existing / "config.json").is_file():
        return {"default": str(existing) if (existing / "config.json").is_file() else None, "published": False}
    write_folder_atomic(DEFAULT_STUDENT, lambda folder: shutil.copytree(student, folder, dirs_exist_ok=True))
    return {"default": DEFAULT_STUDENT, "published": True}


def stage_features(s: DemoSettings, size: int, out: Path) -> tuple[Path, Stage]:
    """One FID-domain network scores every model (different networks would make the FIDs incomparable).
    It sees images at 32 px at most: the texture families are told apart at that size, at a quarter of the cost."""
    folder, size = out / "fid-domain", min(size, 32)
    builtin_domain_features(size, steps=s.feature_steps).save(folder)
    return folder, Stage("features", note=f"FID-domain CNN, {s.feature_steps} steps on procedural textures at {size} px")


def stage_ad(s: DemoSettings, teacher_path: Path, out: Path) -> Stage:
    """Adam vs Muon on the AD objective: the ad-convergence benchmark's measurement, at the demo's size."""
    teacher = load_teacher(teacher_path)
    (out / "ad").mkdir(parents=True, exist_ok=True)
    result = ad_convergence.measure(teacher, s.ad, picture=out / "ad" / "adam-vs-muon.png")
    save_json(out / "ad" / "result.json", asdict(result))
    # The benchmark's notion of convergence: the final loss of complete n-step syntheses, for the optimiser that
    # got further in N steps, against the other's N-step final loss.
    case, n = result.config["per_case"][0], s.ad.steps
    leader, other = case["leader"], "adam" if case["leader"] == "muon" else "muon"
    budgets = sorted(case[f"{leader}_final_loss_by_budget"].items())
    curves = {f"{leader.title()}, complete n-step runs": _xy(budgets),
              f"{other.title()} after {n} steps": ([budgets[0][0], n], [case[f"{other}_final_loss"]] * 2)}
    save_figure(convergence_figure(curves, "steps n (one DDIM schedule of n timesteps)", "final AD loss",
                                   f"AD style transfer: {case['case']}"), out / "ad" / "convergence.png")
    return Stage("ad", note=f"{s.ad.steps} steps at {s.ad.size} px, {s.ad.pairs} pair(s), lrs tuned on a held-out pair",
                 results={**result.metrics, "baseline": result.baseline, "picture": str(out / "ad" / "adam-vs-muon.png"),
                                "curve": str(out / "ad" / "convergence.png")})


def stage_distill(s: DemoSettings, teacher_path: Path, features: Path, out: Path) -> Stage:
    """The Muon-AD recipe and its AdamW baseline (the distill-convergence measurement, on the demo's teacher):
    same student init, data, draws and validation; only the optimiser (and conflict projection) differ."""
    runs = {"Muon-AD": distill_convergence.bench_config(s.distill, out / "distill", "cpu")}
    runs["AdamW"] = as_baseline(runs["Muon-AD"])
    results = {}
    for name, cfg in runs.items():
        cfg.train.teacher, cfg.validation.fid_features_path = str(teacher_path), str(features)
        folder = distill(cfg)
        curve = distill_convergence.read_curve(Path(cfg.train.out_dir))
        results[name] = {"student": str(folder), "samples": str(Path(cfg.train.out_dir) / "samples.png"), "val": curve}
    muon, adamw = results["Muon-AD"]["val"], results["AdamW"]["val"]
    reached = distill_convergence.steps_to_reach(muon, adamw[-1]["val_loss"])
    metrics = {"adamw_final_val_loss": adamw[-1]["val_loss"], "muon_final_val_loss": muon[-1]["val_loss"],
               "muon_steps_to_adamw_final": reached, "adamw_steps": s.distill.steps,
               "speedup": s.distill.steps / reached if reached else 0.0}
    curves = {name: ([r["step"] for r in res["val"]], [r["val_loss"] for r in res["val"]]) for name, res in results.items()}
    save_figure(convergence_figure(curves, "training steps", "validation loss (fixed draws)", "student distillation"),
                out / "distill" / "convergence.png")
    save_json(out / "distill" / "result.json", {"metrics": metrics, "runs": results})
    return Stage("distill", note=f"{s.distill.steps} steps, batch {s.distill.batch_size}, {s.distill.images} images per bank",
                 results={**metrics, "runs": results, "curve": str(out / "distill" / "convergence.png")})


EVAL_LABELS = {"ssim": "SSIM to the content", "edge_score": "edge score", "style_fid": "style FID-domain"}


def stage_evaluate(s: DemoSettings, teacher_path: Path, students: dict[str, str], features: Path, out: Path) -> Stage:
    """Every row on the same `eval_pairs` held-out labelled pairs, scored by one FID-domain network and one pair of
    judges (`eval.style_strength`): the identity map (output = content, style strength 0), optimisation-based AD
    with Adam (style strength 1) and Muon, both students; and each row's time per image."""
    teacher = load_teacher(teacher_path)
    size = teacher.image_size
    contents, styles, labels = builtin_labelled_pairs(s.eval_pairs, size)
    feature_net = DomainFeatures.load(features)
    judges = train_judges(s.judge_images, size, s.judge_steps)
    outputs, latency_ms = {"identity": contents}, {}
    for optimizer in ("adam", "muon"):
        name = f"AD {optimizer.capitalize()}"
        outputs[name], seconds = ad_stylize_pairs(teacher, contents, styles, optimizer, s.teacher_ad_steps)
        latency_ms[name] = 1000.0 * median(seconds)
    for name, folder in students.items():
        backend = load_backend(folder)
        outputs[name] = stylize_pairs(backend, contents, styles)
        latency_ms[name] = measure_latency(lambda: run_student(backend, contents[0], encode_style(backend, styles[0])),
                                           repeats=s.latency_repeats, warmup=2)["median_ms"]
    scores = {name: score_stylization(images, contents, styles, labels, feature_net, judges, kid_subsets=20)
              for name, images in outputs.items()}
    for row in scores.values():
        row["style_strength_ratio"] = style_strength_ratio(scores["identity"]["style_fid"],
                                                           scores["AD Adam"]["style_fid"], row["style_fid"])
    k = min(s.eval_pairs, 6)
    columns = [contents[:k], styles[:k], *(images[:k] for name, images in outputs.items() if name != "identity")]
    grid = torch.stack([column[i] for i in range(k) for column in columns])
    names = ["content (= identity)", "style", *(name for name in outputs if name != "identity")]
    save_image_atomic(image_grid(grid, names * k, ncols=len(columns), scale=2), out / "evaluate" / "samples.png")
    figure = style_content_figure(scores, "style_fid", ["ssim", "edge_score"], EVAL_LABELS,
                                  f"style vs content, {s.eval_pairs} held-out pairs at {size} px")
    save_figure(figure, out / "evaluate" / "style-vs-content.png")
    save_json(out / "evaluate" / "result.json", {"scores": scores, "latency_ms": latency_ms})
    return Stage("evaluate", note=f"{s.eval_pairs} held-out pairs at {size} px; AD {s.teacher_ad_steps} steps",
                 results={"scores": scores, "latency_ms": latency_ms, "samples": str(out / "evaluate" / "samples.png"),
                          "pareto": str(out / "evaluate" / "style-vs-content.png")})


def stage_realtime(s: DemoSettings, teacher_path: Path, student: str, out: Path) -> Stage:
    result = realtime.measure(teacher_path, student, s.resolution, s.quick, "cpu", peak=False)  # memory stage measures it
    save_json(out / "realtime.json", asdict(result))
    return Stage("realtime", note=f"student at {s.resolution} px vs {result.baseline}", results=result.metrics)


def stage_memory(s: DemoSettings, teacher_path: Path, student: str, out: Path) -> Stage:
    result = memory.measure(teacher_path, student, s.resolution, "cpu")
    save_json(out / "memory.json", asdict(result))
    return Stage("memory", note=result.config["measured"], results=result.metrics)


def stage_stream(s: DemoSettings, student: str, out: Path, name: str = "stream") -> Stage:
    """A panning synthetic clip, stylised frame by frame with change skipping, as `muon-ad stream` does (`student`:
    a torch student folder or an exported one)."""
    _, styles = builtin_pairs(1, s.stream_size)
    frames = list(synthetic_frames(s.stream_size, s.stream_frames, drift=max(1.0, s.stream_size / 32)))
    stylizer = Stylizer(load_backend(student), styles[0], skip_threshold=0.01)
    with FrameWriter(out / name / "input.gif", fps=12) as source, FrameWriter(out / name / "stylised.gif", fps=12) as sink:
        for frame in frames:
            source.write(frame)
        stats = run_stream(frames, stylizer, sink=sink.write, progress=False)
    save_image_atomic(styles[0], out / name / "style.png")
    return Stage(name, note=f"{s.stream_frames} synthetic frames at {s.stream_size} px, skip threshold 0.01",
                 results={**stats.summary(), "input": str(out / name / "input.gif"),
                          "output": str(out / name / "stylised.gif"), "style": str(out / name / "style.png")})


def stage_t2i(s: DemoSettings, teacher_path: Path, out: Path) -> Stage:
    """The compressed few-step text-to-image student (`muon-ad distill-t2i configs/t2i-tiny.yaml`) of the demo's
    teacher; teacher and student on the same prompts and seeds, with their parameters, FLOPs per UNet call and
    seconds per image (as `bench t2i` measures them)."""
    teacher = load_teacher(teacher_path)
    cfg = load_config(DistillT2IConfig, T2I_CONFIG, s.t2i_overrides + [
        f"train.teacher={teacher_path}", f"train.out_dir={out / 't2i'}", f"data.size={teacher.image_size}"])
    student = load_teacher(distill_t2i(cfg))
    results = {**t2i_bench.costs(teacher, student, 1 if s.quick else 5, "cpu"), "variant": cfg.student.variant,
               "teacher_steps": teacher.default_steps, "student_steps": student.default_steps,
               "folder": str(out / "t2i" / "student"), "samples": str(out / "t2i" / "samples.png")}
    return Stage("t2i", note=f"BK-SDM '{cfg.student.variant}' student, {cfg.schedule.compress_steps} compression + "
                 f"{cfg.schedule.consistency_steps} consistency steps; {student.default_steps} LCM steps vs the "
                 f"teacher's {teacher.default_steps} DDIM steps", results=results)


def stage_edge(s: DemoSettings, student: str, out: Path) -> Stage:
    """The edge path, as `muon-ad prune` then `muon-ad export --precision int8` run it: the Muon-AD student pruned
    (entropy criterion: channels, heads, transformer blocks) with a short recovery fine-tune, exported to an int8
    ONNX Runtime folder, and timed against the fp32 torch student through the one runtime path (the stream stage
    then runs the export)."""
    pruned = prune(student, s.edge_keep, out / "edge" / "pruned", "entropy", s.edge_finetune_steps,
                   attention_blocks=s.edge_attention_blocks)
    exported = export_student(pruned, out / "edge" / "int8", "int8", s.edge_calibration)
    content, style = (to_tensor(image).unsqueeze(0) for image in sample_pair(s.resolution))
    models = {"student": load_backend(student).student, "pruned": load_backend(pruned).student}
    flops = {name: count_flops(model, content, style) for name, model in models.items()}
    params = {name: count_parameters(model) for name, model in models.items()}
    times = interleaved_latency({"student": Path(student), "pruned": pruned, "edge": exported}, s.resolution,
                                s.latency_repeats, "cpu")
    ms = {name: median(values) for name, values in times.items()}
    report = json.loads((exported / "report.json").read_text())
    student_mb = (Path(student) / "model.safetensors").stat().st_size / 1e6
    results = {"flops_reduction": 1 - flops["pruned"] / flops["student"],
               "params_reduction": 1 - params["pruned"] / params["student"],
               "ms_per_frame": ms, "latency_ratio": ms["pruned"] / ms["student"],
               "edge_latency_ratio": ms["edge"] / ms["student"],
               "ssim_int8_vs_fp32": report["quality"]["ssim_vs_fp32"], "model_onnx_mb": report["files_mb"]["model.onnx"],
               "student_mb": student_mb, "pruned": str(pruned), "export": str(exported)}
    save_json(out / "edge" / "result.json", results)
    blocks = "all" if s.edge_attention_blocks is None else s.edge_attention_blocks
    return Stage("edge", note=f"keep {s.edge_keep}, {blocks} transformer block(s), entropy criterion, "
                 f"{s.edge_finetune_steps} fine-tune steps; "
                 f"int8 calibrated on {s.edge_calibration} pairs; {s.resolution} px, torch and ONNX Runtime",
                 results=results)


def stage_not_built() -> list[Stage]:
    """Capabilities of the method that the project does not have yet: listed, never faked."""
    checks = {
        "comm": (None, "comm", "ZeRO-1 + gradient compression communication benchmark"),
    }
    stages = []
    for name, (module, bench, what) in checks.items():
        built = (module is None or _module_exists(module)) and (bench is None or bench in BENCHMARKS)
        stages.append(Stage(name, status="not run here" if built else "not built yet", note=what))
    return stages


def _xy(curve: list) -> tuple[list[float], list[float]]:
    return [p[0] for p in curve], [p[1] for p in curve]


def save_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
