"""The demo (`muon-ad demo [--quick] [--out DIR]`, `make demo`): the whole method on built-in data, one report.

Reads top to bottom; each stage calls the project's own components and saves its outputs in DIR/<stage>/:

1. teacher      train the tiny teacher (quick: a few dozen steps at 32 px into DIR) or reuse the built-in one
2. features     the FID-domain feature network every model is scored with
3. ad           optimisation-based AD style transfer, Adam vs Muon (the ad-convergence measurement)
4. distill      the student with the Muon-AD recipe and with its AdamW baseline (same data, seed, steps),
                as the distill-convergence benchmark runs them
5. evaluate     FID-domain / KID / SSIM / PSNR of both students on held-out pairs; the teacher's AD images
                on a few of the same pairs; latency of each, for the quality-vs-latency plot
6. realtime     student FPS vs the teacher's seconds per image (the realtime benchmark)
7. memory       peak memory of teacher and student (the memory benchmark)
8. stream       a synthetic panning clip stylised live by the Muon-AD student, written as a GIF
9. compression  pruning, quantisation, export, distributed communication: reported "not built yet"
                until those capabilities exist
10. report      DIR/index.html and DIR/report.md: pictures, curves, Pareto plot, the claims table

Every number in the report is measured by this run; a stage that cannot run says so instead.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench import BENCHMARKS, ad_convergence, distill_convergence, memory, realtime
from muon_ad.bench.runner import cpu_name
from muon_ad.checkpoint import write_text_atomic
from muon_ad.config import load_config
from muon_ad.data.images import save_image_atomic, to_pil
from muon_ad.eval.profile import measure_latency
from muon_ad.eval.report import Claim, ParetoPoint, Report, convergence_figure, pareto_figure, save_figure
from muon_ad.eval.stylization import builtin_domain_features, builtin_pairs, evaluate_stylized, stylize_pairs
from muon_ad.models.student import load_student
from muon_ad.models.teacher import load_teacher
from muon_ad.recipes.distill import as_baseline, distill
from muon_ad.recipes.train_teacher import TrainTeacherConfig, train_teacher
from muon_ad.runtime.sources import FrameWriter, synthetic_frames
from muon_ad.runtime.stream import run_stream
from muon_ad.runtime.stylizer import Stylizer
from muon_ad.synthesis import stylize
from muon_ad.visual import image_grid

log = logging.getLogger("muon_ad.demo")

TEACHER_CONFIG = "configs/teacher-tiny.yaml"


@dataclass
class DemoSettings:
    """Sizes of every stage; QUICK is what the test runs, FULL what `make demo` runs."""

    quick: bool
    teacher_overrides: list[str]  # applied to configs/teacher-tiny.yaml (quick: a tiny run into DIR)
    feature_steps: int
    ad: ad_convergence.Settings
    distill: distill_convergence.Settings
    eval_pairs: int  # held-out pairs both students are scored on
    teacher_pairs: int  # of those, how many the teacher also stylises by AD (slow) for the Pareto plot
    teacher_ad_steps: int
    resolution: int  # of the realtime and memory measurements
    stream_size: int
    stream_frames: int
    latency_repeats: int = 10


QUICK = DemoSettings(
    quick=True,
    teacher_overrides=["model.image_size=32", "data.size=32", "data.textures=48", "data.scenes=16",
                       "train.vae_steps=8", "train.unet_steps=16", "train.batch_size=8", "train.vae_crop=16",
                       "train.warmup_steps=4", "train.checkpoint_every=1000", "train.sample_steps=4"],
    feature_steps=20,
    ad=ad_convergence.Settings(size=32, steps=6, budgets=[3, 4, 6], pairs=1, exemplars=0, eval_timesteps=2,
                               adam_grid=[0.05], muon_grid=[0.05]),
    distill=distill_convergence.Settings(steps=6, batch_size=2, val_every=3, val_pairs=4, images=10,
                                         student=distill_convergence.QUICK.student),
    eval_pairs=6,
    teacher_pairs=2,
    teacher_ad_steps=4,
    resolution=64,
    stream_size=64,
    stream_frames=12,
    latency_repeats=5,
)
FULL = DemoSettings(  # sized so the whole demo fits in about 20 minutes on 2 CPU cores
    quick=False,
    teacher_overrides=[],
    feature_steps=200,
    ad=ad_convergence.Settings(size=64, steps=40, budgets=[10, 13, 20, 27, 32, 40], pairs=1, exemplars=0,
                               eval_timesteps=4, adam_grid=[0.05], muon_grid=[0.05, 0.1]),
    distill=distill_convergence.Settings(steps=96, batch_size=8, val_every=16, val_pairs=32, images=256),
    eval_pairs=64,
    teacher_pairs=4,
    teacher_ad_steps=30,
    resolution=256,
    stream_size=256,
    stream_frames=48,
)


@dataclass
class Stage:
    name: str
    status: str = "done"  # "done", "not built yet", or "not run here" (built, but not part of the demo yet)
    seconds: float = 0.0
    note: str = ""
    results: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ stages


def stage_teacher(s: DemoSettings, out: Path) -> tuple[Path, Stage]:
    """Quick: a tiny teacher trained into DIR, so the demo depends on nothing. Full: the built-in teacher."""
    if not s.quick and (Path(DEFAULT_TEACHER) / "unet").is_dir():
        samples = Path(DEFAULT_TEACHER).parent / "samples.png"
        return Path(DEFAULT_TEACHER), Stage("teacher", note=f"reused {DEFAULT_TEACHER}",
                                            results={"samples": str(samples) if samples.is_file() else None})
    cfg = load_config(TrainTeacherConfig, TEACHER_CONFIG, s.teacher_overrides + [f"train.out_dir={out / 'teacher'}"])
    folder = train_teacher(cfg)
    steps = cfg.train.vae_steps + cfg.train.unet_steps
    return folder, Stage("teacher", note=f"trained {steps} steps at {cfg.model.image_size} px",
                         results={"samples": str(out / "teacher" / "samples.png"), "steps": steps})


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
    _save_json(out / "ad" / "result.json", asdict(result))
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
    _save_json(out / "distill" / "result.json", {"metrics": metrics, "runs": results})
    return Stage("distill", note=f"{s.distill.steps} steps, batch {s.distill.batch_size}, {s.distill.images} images per bank",
                 results={**metrics, "runs": results, "curve": str(out / "distill" / "convergence.png")})


def stage_evaluate(s: DemoSettings, teacher_path: Path, students: dict[str, str], features: Path, out: Path) -> Stage:
    """Both students on `eval_pairs` held-out pairs; the teacher's AD (Adam, Muon) on the first `teacher_pairs`."""
    teacher = load_teacher(teacher_path)
    size = teacher.image_size
    contents, styles = builtin_pairs(s.eval_pairs, size)
    k = s.teacher_pairs
    models, latency_ms, subset_images, labels = {}, {}, {}, ["content", "style"]
    for name, folder in students.items():
        student = load_student(folder)
        images = stylize_pairs(student, contents, styles)
        models[name] = evaluate_stylized(images, contents, styles, feature="domain", feature_path=features)
        subset_images[name] = images[:k]
        labels.append(name)
        one = (contents[:1], styles[:1])
        with torch.inference_mode():
            latency_ms[name] = measure_latency(lambda: student(*one), repeats=s.latency_repeats, warmup=2)["median_ms"]
    for optimizer in ("adam", "muon"):  # the teacher's own path to the same images, for the Pareto plot
        name, images, seconds = f"teacher AD ({optimizer.capitalize()}, {s.teacher_ad_steps} steps)", [], []
        for i in range(k):
            start = time.perf_counter()
            result = stylize(teacher, to_pil(contents[i]), to_pil(styles[i]), steps=s.teacher_ad_steps,
                             optimizer=optimizer, size=size, progress=False)
            seconds.append(time.perf_counter() - start)
            images.append(result.image)
        subset_images[name] = torch.stack(images)
        labels.append(f"AD {optimizer.capitalize()}")
        latency_ms[name] = 1000.0 * sum(seconds) / len(seconds)
    subset = {name: evaluate_stylized(images, contents[:k], styles[:k], feature="domain", feature_path=features,
                                      kid_subsets=10)
              for name, images in subset_images.items()}
    columns = [contents[:k], styles[:k], *subset_images.values()]  # one row per pair
    grid = torch.stack([column[i] for i in range(k) for column in columns])
    save_image_atomic(image_grid(grid, labels * k, ncols=len(columns), scale=2), out / "evaluate" / "samples.png")
    _save_json(out / "evaluate" / "result.json", {"models": models, "subset": subset, "latency_ms": latency_ms})
    return Stage("evaluate", note=f"{s.eval_pairs} held-out pairs at {size} px; teacher AD on {k}",
                 results={"models": models, "subset": subset, "latency_ms": latency_ms,
                          "samples": str(out / "evaluate" / "samples.png")})


def stage_realtime(s: DemoSettings, teacher_path: Path, student: str, out: Path) -> Stage:
    result = realtime.measure(teacher_path, student, s.resolution, s.quick, "cpu", peak=False)  # memory stage measures it
    _save_json(out / "realtime.json", asdict(result))
    return Stage("realtime", note=f"student at {s.resolution} px vs {result.baseline}", results=result.metrics)


def stage_memory(s: DemoSettings, teacher_path: Path, student: str, out: Path) -> Stage:
    result = memory.measure(teacher_path, student, s.resolution, "cpu")
    _save_json(out / "memory.json", asdict(result))
    return Stage("memory", note=result.config["measured"], results=result.metrics)


def stage_stream(s: DemoSettings, student: str, out: Path) -> Stage:
    """A panning synthetic clip, stylised frame by frame with change skipping, as `muon-ad stream` does."""
    _, styles = builtin_pairs(1, s.stream_size)
    frames = list(synthetic_frames(s.stream_size, s.stream_frames, drift=max(1.0, s.stream_size / 32)))
    stylizer = Stylizer(load_student(student), styles[0], skip_threshold=0.01)
    with FrameWriter(out / "stream" / "input.gif", fps=12) as source, FrameWriter(out / "stream" / "stylised.gif", fps=12) as sink:
        for frame in frames:
            source.write(frame)
        stats = run_stream(frames, stylizer, sink=sink.write, progress=False)
    save_image_atomic(styles[0], out / "stream" / "style.png")
    return Stage("stream", note=f"{s.stream_frames} synthetic frames at {s.stream_size} px, skip threshold 0.01",
                 results={**stats.summary(), "input": str(out / "stream" / "input.gif"),
                          "output": str(out / "stream" / "stylised.gif"), "style": str(out / "stream" / "style.png")})


def stage_not_built() -> list[Stage]:
    """Capabilities of the method that the project does not have yet: listed, never faked."""
    checks = {
        "prune": ("muon_ad.compress.prune", "prune", "entropy-driven head/channel pruning and compaction"),
        "quantise": ("muon_ad.compress.quant", "quant", "mixed-precision int8/bf16 quantisation"),
        "export": ("muon_ad.compress.export", None, "ONNX export of the student (ONNX Runtime path: `muon-ad stream --student FILE.onnx`)"),
        "comm": (None, "comm", "ZeRO-1 + gradient compression communication benchmark"),
    }
    stages = []
    for name, (module, bench, what) in checks.items():
        built = (module is None or _module_exists(module)) and (bench is None or bench in BENCHMARKS)
        stages.append(Stage(name, status="not run here" if built else "not built yet", note=what))
    return stages


# ------------------------------------------------------------------------------------------------ report


def claims(stages: dict[str, Stage]) -> list[Claim]:
    """The paper's claims beside this run's measurements."""
    ad, dist, ev = stages["ad"].results, stages["distill"].results, stages["evaluate"].results["models"]
    rt, mem = stages["realtime"].results, stages["memory"].results
    muon, adamw = ev["Muon-AD"], ev["AdamW"]
    fid_drop = (adamw["fid_domain"] - muon["fid_domain"]) / adamw["fid_domain"]
    ssim_gain = (muon["ssim"] - adamw["ssim"]) / adamw["ssim"]
    cpu, res = f"CPU: {cpu_name()}", rt["resolution"]
    peak_gb = max(mem["teacher_sampling_peak_mb"], mem["teacher_peak_mb"], mem["student_peak_mb"]) / 1024
    comm, prune = stages["comm"], stages["prune"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    return [
        Claim("3.2× faster convergence (AD synthesis, Muon vs Adam)",
              f"{ad['speedup']:.2f}×: " + (f"Muon matched Adam's {ad['adam_iters']}-step final loss in "
                                          f"{ad['muon_iters_to_adam_final']:g} steps" if ad["muon_iters_to_adam_final"] else
                                          f"Muon did not reach Adam's {ad['adam_iters']}-step final loss (a speedup below 1 "
                                          "is the fraction of the steps Adam needed to match Muon)")
              + f"; median of {ad['cases']} case(s)",
              "muon-ad bench ad-convergence", verdict(ad["speedup"] >= 3.2)),
        Claim("3.2× faster convergence (student distillation, Muon-AD vs AdamW)",
              f"{dist['speedup']:.2f}×: " + (f"Muon-AD reached AdamW's final validation loss after "
                                            f"{dist['muon_steps_to_adamw_final']:.0f} of {dist['adamw_steps']} steps"
                                            if dist["muon_steps_to_adamw_final"] else
                                            f"Muon-AD did not reach AdamW's final validation loss within {dist['adamw_steps']} steps"),
              "muon-ad bench distill-convergence", verdict(dist["speedup"] >= 3.2)),
        Claim("15% lower FID than the baseline",
              f"FID-domain {muon['fid_domain']:.4g} (Muon-AD) vs {adamw['fid_domain']:.4g} (AdamW): {_relative(-fid_drop)}",
              "muon-ad evaluate STUDENT", verdict(fid_drop >= 0.15)),
        Claim("4% higher SSIM than the baseline",
              f"SSIM {muon['ssim']:.4f} (Muon-AD) vs {adamw['ssim']:.4f} (AdamW): {_relative(ssim_gain)}",
              "muon-ad evaluate STUDENT", verdict(ssim_gain >= 0.04)),
        Claim("24 FPS real-time stylisation",
              f"{rt['student_fps']:.1f} FPS at {res}×{res}, batch 1, {cpu}",
              "muon-ad bench realtime", verdict(rt["student_fps"] >= 24)),
        Claim("7 GB peak memory (edge GPU)",
              f"{peak_gb:.2f} GB peak RSS (largest of teacher AD {mem['teacher_peak_mb']:.0f} MB, teacher sampling "
              f"{mem['teacher_sampling_peak_mb']:.0f} MB, student {mem['student_peak_mb']:.0f} MB) at {res} px; {cpu}; "
              "the built-in tiny teacher, not SD-1.5",
              "muon-ad bench memory", verdict(peak_gb <= 7)),
        Claim("65% less communication (distributed training)", f"{comm.status}: {comm.note}",
              "muon-ad bench comm", comm.status),
        Claim("10 s/image generation",
              f"{rt['generation_seconds_per_image']:.2f} s/image (DDIM 30 steps, tiny teacher at its own resolution; {cpu})",
              "muon-ad bench realtime", verdict(rt["generation_seconds_per_image"] <= 10)),
        Claim("−60% FLOPs from entropy pruning", f"{prune.status}: {prune.note}",
              "muon-ad bench prune", prune.status),
    ]


def goals(stages: dict[str, Stage]) -> list[Claim]:
    """The project's own targets on this 2-core CPU (see the issue tracker), beside this run."""
    rt = stages["realtime"].results
    res = rt["resolution"]
    return [
        Claim("student ≥ 24 FPS at 256×256 (128×128 at the least)", f"{rt['student_fps']:.1f} FPS at {res}×{res}",
              "muon-ad bench realtime", "met" if rt["student_fps"] >= 24 and res >= 128 else "not met"),
        Claim("student ≥ 100× faster per image than optimisation-based AD",
              f"{rt['speedup']:.0f}× ({rt['teacher_seconds_per_image']:.1f} s per AD image vs {rt['student_ms']:.1f} ms)",
              "muon-ad bench realtime", "met" if rt["speedup"] >= 100 else "not met"),
    ]


def write_report(stages: dict[str, Stage], s: DemoSettings, out: Path, seconds: float) -> Path:
    report = Report(out, f"Muon-AD demo ({'quick' if s.quick else 'full'})")
    report.paragraph(f"Every number below was measured by this run of `muon-ad demo{' --quick' if s.quick else ''}` "
                     f"on {cpu_name()}, Python {platform.python_version()}, torch {torch.__version__.split('+')[0]}, "
                     f"in {seconds / 60:.1f} minutes ({time.strftime('%Y-%m-%d %H:%M')}). "
                     + ("Quick mode: tiny sizes and a handful of steps everywhere, so the figures show that the "
                        "pipeline runs end to end, not what the method achieves." if s.quick else ""))
    report.heading("The paper's claims beside this run")
    report.claims(claims(stages))
    report.heading("Project goals on this machine")
    report.claims(goals(stages), first_column="goal")
    report.heading("Stages")
    report.table(["stage", "status", "seconds", "what"],
                 [[st.name, st.status, f"{st.seconds:.1f}", st.note] for st in stages.values()])

    report.heading("Teacher")
    samples = stages["teacher"].results.get("samples")
    if samples and Path(samples).is_file():
        report.image(samples, "teacher-samples.png", "samples of the teacher, one per texture family (prompt under each)")

    report.heading("Attention distillation: Adam vs Muon")
    ad = stages["ad"].results
    report.paragraph(f"Baseline: {ad['baseline']}. Speedup {ad['speedup']:.2f}× (min {ad['speedup_min']:.2f}, "
                     f"max {ad['speedup_max']:.2f}); final loss Adam {ad['adam_final_loss']:.4g}, Muon "
                     f"{ad['muon_final_loss']:.4g}.")
    report.image(ad["curve"], "ad-convergence.png", "final AD loss of complete syntheses of n steps (lower is better)")
    report.image(ad["picture"], "ad-samples.png", "content, style, Adam and Muon after the full budget, and the "
                 "shorter run that matched the other optimiser")

    report.heading("Student distillation: Muon-AD vs AdamW")
    dist = stages["distill"].results
    report.image(dist["curve"], "distill-convergence.png", "validation loss of the two students during distillation")
    for name, run in dist["runs"].items():
        report.image(run["samples"], f"distill-{name.lower()}.png", f"{name} student on validation pairs: content, style, student")

    report.heading("Evaluation")
    ev = stages["evaluate"].results
    rows = [[name, m["fid_domain"], m["kid_domain_mean"], m["ssim"], m["psnr"], ev["latency_ms"][name]]
            for name, m in ev["models"].items()]
    report.table(["model", "FID-domain ↓", "KID-domain ↓", "SSIM ↑ (to content)", "PSNR (dB)", "ms / image"], rows)
    report.paragraph(f"{stages['evaluate'].note}. FID-domain uses a CNN trained on the procedural textures (no "
                     "Inception weights offline); it ranks models on this data and is not comparable with published FIDs.")
    subset = ev["subset"]
    points = [ParetoPoint(name, ev["latency_ms"][name], m["fid_domain"]) for name, m in subset.items()]
    report.figure(pareto_figure(points, "FID-domain", f"quality vs latency ({s.teacher_pairs} shared pairs)"),
                  "pareto.png", f"FID-domain on the {s.teacher_pairs} pairs every model stylised, against its latency per image")
    report.image(ev["samples"], "eval-samples.png", "held-out pairs, one per row: content, style, then "
                 + ", ".join(ev["latency_ms"]))

    report.heading("Real time")
    rt, mem, st = stages["realtime"].results, stages["memory"].results, stages["stream"].results
    report.table(["measurement", "value"], [[k, v] for k, v in {**rt, **mem}.items()])
    report.paragraph(f"Stream: {st['frames']} frames, {st['stylised']} stylised, {st['skipped']} skipped as unchanged; "
                     f"{st['fps']:.1f} FPS end to end, {st['model_fps']:.1f} FPS per forward pass.")
    report.image(st["input"], "stream-input.gif", "synthetic input clip (a camera panning and pausing)")
    report.image(st["style"], "stream-style.png", "style")
    report.image(st["output"], "stream-output.gif", "stylised live by the Muon-AD student")
    return report.write()


# -------------------------------------------------------------------------------------------------- main


def run_demo(out: str | Path = "demo-report", quick: bool = False) -> Path:
    """Run every stage, write DIR/index.html and DIR/report.md; returns the path of index.html."""
    s, out = (QUICK if quick else FULL), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    stages: dict[str, Stage] = {}

    def timed(fn, *args):
        t0 = time.time()
        result = fn(*args)
        stage = result[-1] if isinstance(result, tuple) else result
        stage.seconds = time.time() - t0
        stages[stage.name] = stage
        log.info("demo: %s done in %.1f s", stage.name, stage.seconds)
        return result[0] if isinstance(result, tuple) else None

    teacher = timed(stage_teacher, s, out)
    size = load_teacher(teacher).image_size
    features = timed(stage_features, s, size, out)
    timed(stage_ad, s, teacher, out)
    timed(stage_distill, s, teacher, features, out)
    students = {name: run["student"] for name, run in stages["distill"].results["runs"].items()}
    timed(stage_evaluate, s, teacher, students, features, out)
    timed(stage_realtime, s, teacher, students["Muon-AD"], out)
    timed(stage_memory, s, teacher, students["Muon-AD"], out)
    timed(stage_stream, s, students["Muon-AD"], out)
    for stage in stage_not_built():
        stages[stage.name] = stage
    index = write_report(stages, s, out, time.time() - start)
    _save_json(out / "stages.json", {name: asdict(st) for name, st in stages.items()})
    log.info("demo: report in %s (%.1f min)", index, (time.time() - start) / 60)
    return index


def _relative(change: float) -> str:
    return f"{100 * abs(change):.1f}% {'higher' if change >= 0 else 'lower'}"


def _xy(curve: list) -> tuple[list[float], list[float]]:
    return [p[0] for p in curve], [p[1] for p in curve]


def _save_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
