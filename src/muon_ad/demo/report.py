"""The demo's report: the paper's claims and the project's goals beside this run's measurements, then pictures,
curves and tables for each stage (DIR/index.html and DIR/report.md)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from muon_ad.bench.runner import cpu_name
from muon_ad.demo.settings import DemoSettings
from muon_ad.demo.stages import Stage
from muon_ad.eval.report import Claim, ParetoPoint, Report, pareto_figure


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



def _relative(change: float) -> str:
    return f"{100 * abs(change):.1f}% {'higher' if change >= 0 else 'lower'}"
