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
from muon_ad.eval.style_strength import STYLE_BAR

STYLE_MATCH_TOLERANCE = 0.05  # style strengths this close count as matched for the SSIM comparison


def claims(stages: dict[str, Stage]) -> list[Claim]:
    """The paper's claims beside this run's measurements."""
    ad, dist, ev = stages["ad"].results, stages["distill"].results, stages["evaluate"].results["scores"]
    rt, mem = stages["realtime"].results, stages["memory"].results
    muon, adamw = ev["Muon-AD"], ev["AdamW"]
    fid_drop = (adamw["style_fid"] - muon["style_fid"]) / adamw["style_fid"]
    ssim_gain = (muon["ssim"] - adamw["ssim"]) / adamw["ssim"]
    # SSIM to the content rewards doing nothing (the identity map scores 1): a gain counts only when it is not
    # bought by stylising less, i.e. at matched style strength, and only for students that stylise at all.
    matched = muon["style_strength_ratio"] >= adamw["style_strength_ratio"] - STYLE_MATCH_TOLERANCE
    stylises = min(muon["style_strength_ratio"], adamw["style_strength_ratio"]) >= STYLE_BAR
    cpu, res = f"CPU: {cpu_name()}", rt["resolution"]
    peak_gb = max(mem["teacher_sampling_peak_mb"], mem["teacher_peak_mb"], mem["student_peak_mb"]) / 1024
    comm, edge = stages["comm"], stages["edge"].results

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
              f"style FID-domain (outputs vs their styles) {muon['style_fid']:.4g} (Muon-AD) vs {adamw['style_fid']:.4g} "
              f"(AdamW): {_relative(-fid_drop)}; the identity map scores {ev['identity']['style_fid']:.4g}",
              "muon-ad bench stylization", verdict(fid_drop >= 0.15)),
        Claim("4% higher SSIM than the baseline (at matched style strength)",
              f"SSIM {muon['ssim']:.4f} (Muon-AD) vs {adamw['ssim']:.4f} (AdamW): {_relative(ssim_gain)}, at style "
              f"strength {muon['style_strength_ratio']:.2f} vs {adamw['style_strength_ratio']:.2f} (0 = identity map, "
              f"1 = AD)" + ("" if stylises else f"; not comparable: a student below the style bar ({STYLE_BAR}) keeps "
                            "content by not stylising") + ("" if matched else "; Muon-AD stylises less"),
              "muon-ad bench stylization", verdict(ssim_gain >= 0.04 and matched and stylises)),
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
        Claim("−60% FLOPs from entropy pruning",
              f"−{100 * edge['flops_reduction']:.1f}% FLOPs, −{100 * edge['params_reduction']:.1f}% parameters, "
              f"latency {edge['latency_ratio']:.2f}× (torch) at {res} px after {stages['edge'].note.split(';')[0]}",
              "muon-ad bench prune", verdict(edge["flops_reduction"] >= 0.6)),
    ]


def goals(stages: dict[str, Stage]) -> list[Claim]:
    """The project's own targets on this 2-core CPU (see the issue tracker), beside this run."""
    rt = stages["realtime"].results
    res = rt["resolution"]
    ev, ms = stages["evaluate"].results["scores"], stages["evaluate"].results["latency_ms"]
    student, ad = ev["Muon-AD"], ev["AD Adam"]
    per_image = ms["AD Adam"] / ms["Muon-AD"]
    return [
        Claim("Muon-AD student's style strength ≥ 0.8 (0 = identity map, 1 = AD with Adam)",
              f"{student['style_strength_ratio']:.2f} (AdamW student {ev['AdamW']['style_strength_ratio']:.2f}, AD Muon "
              f"{ev['AD Muon']['style_strength_ratio']:.2f}); style FID-domain {student['style_fid']:.3g} vs identity "
              f"{ev['identity']['style_fid']:.3g} and AD {ad['style_fid']:.3g}",
              "muon-ad bench stylization", "met" if student["style_strength_ratio"] >= 0.8 else "not met"),
        Claim("palette hit rate ≥ 0.8× AD's",
              f"{student['palette_hit']:.2f} vs AD {ad['palette_hit']:.2f} (identity {ev['identity']['palette_hit']:.2f})",
              "muon-ad bench stylization", "met" if student["palette_hit"] >= 0.8 * ad["palette_hit"] else "not met"),
        Claim("content kept at least as well as AD (SSIM ≥ AD's)",
              f"SSIM {student['ssim']:.3f} vs AD {ad['ssim']:.3f}; edge score {student['edge_score']:.3f} vs "
              f"{ad['edge_score']:.3f}", "muon-ad bench stylization", "met" if student["ssim"] >= ad["ssim"] else "not met"),
        Claim("≥ 1000× less time per image than AD",
              f"{per_image:.0f}× ({ms['AD Adam'] / 1000:.1f} s per AD image, {stages['evaluate'].note}, vs "
              f"{ms['Muon-AD']:.1f} ms)", "muon-ad bench stylization", "met" if per_image >= 1000 else "not met"),
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

    report.heading("Stylisation: style strength and content kept")
    ev = stages["evaluate"].results
    rows = [[name, m["style_fid"], m["palette_hit"], m["family_hit"], m["gram_distance"], m["style_strength_ratio"],
             m["ssim"], m["edge_score"], ev["latency_ms"].get(name, "–")] for name, m in ev["scores"].items()]
    report.table(["row", "style FID-domain ↓", "palette hit ↑", "family hit ↑", "Gram distance ↓", "style strength ↑",
                  "SSIM to content", "edge score", "ms / image"], rows)
    report.paragraph(f"{stages['evaluate'].note}. Style strength is (style FID of the identity map − the row's) / "
                     "(identity − AD with Adam): 0 for a model that returns its content, 1 at AD's level. Palette and "
                     "family hits: two judges (CNNs trained on real textures) name each output with its own style's "
                     "labels (chance 1/8 and 1/12). SSIM alone rewards copying the content; the edge score looks only "
                     "at where edges are. FID-domain uses a CNN trained on the procedural textures (no Inception "
                     "weights offline) and is not comparable with published FIDs.")
    report.image(ev["pareto"], "pareto.png", "style (style FID-domain, up = more style) against content kept, every "
                 "row marked, with the Pareto front")
    points = [ParetoPoint(name, ev["latency_ms"][name], ev["scores"][name]["style_fid"]) for name in ev["latency_ms"]]
    report.figure(pareto_figure(points, "style FID-domain", "style vs time per image"), "latency.png",
                  "style FID-domain against time per image")
    report.image(ev["samples"], "eval-samples.png", "held-out pairs, one per row: content (= the identity map's "
                 "output), style, then " + ", ".join(name for name in ev["scores"] if name != "identity"))

    report.heading("Real time")
    rt, mem, st = stages["realtime"].results, stages["memory"].results, stages["stream"].results
    report.table(["measurement", "value"], [[k, v] for k, v in {**rt, **mem}.items()])
    report.paragraph(f"Stream: {st['frames']} frames, {st['stylised']} stylised, {st['skipped']} skipped as unchanged; "
                     f"{st['fps']:.1f} FPS end to end, {st['model_fps']:.1f} FPS per forward pass.")
    report.image(st["input"], "stream-input.gif", "synthetic input clip (a camera panning and pausing)")
    report.image(st["style"], "stream-style.png", "style")
    report.image(st["output"], "stream-output.gif", "stylised live by the Muon-AD student")

    if "t2i" in stages:
        _t2i_section(report, stages["t2i"])
    _edge_section(report, stages["edge"], stages["edge-stream"].results)

    report.heading("Try next")
    report.paragraph("On this run's teacher and Muon-AD student (from the folder the demo ran in, or from anywhere "
                     "when they are the defaults: `muon_ad.default_path`): "
                     + "; ".join(f"`{command}`" for command in next_commands(stages)) + ".")
    return report.write()


def next_commands(stages: dict[str, Stage]) -> list[str]:
    """The README's first commands on what this run made: no flag where the artefact is where commands look by
    default (the full demo's), `--teacher` / `--student` where it is not (`--quick`'s, or a student already there)."""
    distill, style = stages["distill"].results, stages["stream"].results["style"]
    teacher = stages["teacher"].results.get("folder")
    with_teacher = f" --teacher {teacher}" if teacher else ""
    own = distill["runs"]["Muon-AD"]["student"]
    published = distill.get("default_student", {}).get("published")
    student = distill.get("default_student", {}).get("default") if published else own
    with_student = "" if published else f" --student {own}"
    return [f"muon-ad stylize -c CONTENT.png -s {style}{with_teacher}  # AD through the teacher",
            f"muon-ad stylize -c CONTENT.png -s {style} --student {student}  # the student: one forward pass",
            f"muon-ad texture -e {style}{with_teacher}",
            f"muon-ad sample -p \"blue and orange stripes\"{with_teacher}",
            f"muon-ad stream --style {style}{with_student}"]



def _t2i_section(report: Report, stage: Stage) -> None:
    """The compressed few-step text-to-image student: its costs beside the teacher's, and both on the same prompts."""
    r = stage.results
    report.heading("Text-to-image: the compressed few-step student")
    report.table(["", "teacher", "student"], [
        ["sampling steps", r["teacher_steps"], r["student_steps"]],
        ["seconds per image", f"{r['teacher_seconds_per_image']:.3f}", f"{r['student_seconds_per_image']:.3f}"],
        ["UNet parameters (× teacher)", "1", f"{r['params_ratio']:.3f}"],
        ["FLOPs per UNet call (× teacher)", "1", f"{r['flops_ratio']:.3f}"]])
    report.paragraph(f"{stage.note}. {r['speedup']:.1f}× faster per image (text encoding and decoding included). "
                     f"The student is a diffusers SD folder: `muon-ad sample --teacher {r['folder']} -p \"...\"`. "
                     "Family and palette accuracy and the Muon-AD vs AdamW race: `muon-ad bench t2i`.")
    report.image(r["samples"], "t2i-samples.png", "the same prompts and seeds: teacher (top row, T) and the "
                 "student (bottom row, S + its steps)")


def _edge_section(report: Report, stage: Stage, stream: dict) -> None:
    """prune → int8 export → stream on ONNX Runtime: each step's figures."""
    r, ms = stage.results, stage.results["ms_per_frame"]
    report.heading("Edge path: pruned, int8, ONNX Runtime")
    report.table(["step", "figure"], [
        ["prune + compact (`muon-ad prune`)", f"−{100 * r['flops_reduction']:.1f}% FLOPs, "
         f"−{100 * r['params_reduction']:.1f}% parameters; {ms['pruned']:.1f} ms vs {ms['student']:.1f} ms per frame"],
        ["int8 export (`muon-ad export --precision int8`)", f"model.onnx {r['model_onnx_mb']:.2f} MB (student "
         f"{r['student_mb']:.2f} MB fp32); SSIM vs the pruned fp32 student {r['ssim_int8_vs_fp32']:.3f}"],
        ["ONNX Runtime int8, one frame", f"{ms['edge']:.1f} ms = {r['edge_latency_ratio']:.2f}× the fp32 torch student"],
        ["stream (`muon-ad stream --student EXPORT`)", f"{stream['fps']:.1f} FPS end to end, "
         f"{stream['model_fps']:.1f} FPS per forward pass, {stream['frames']} frames"]])
    report.paragraph(f"{stage.note}. Quality of pruning at the benchmark's length, and the magnitude criterion "
                     "beside it: `muon-ad bench prune`; PTQ vs QAT and sizes: `muon-ad bench quant`.")
    report.image(stream["output"], "edge-stream-output.gif", "the same clip stylised by the pruned int8 student")


def _relative(change: float) -> str:
    return f"{100 * abs(change):.1f}% {'higher' if change >= 0 else 'lower'}"
