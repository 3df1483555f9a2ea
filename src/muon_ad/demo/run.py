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
9. t2i          the compressed few-step text-to-image student; teacher vs student samples and costs
10. edge        prune (+ recovery fine-tune) → int8 ONNX export → the stream again on ONNX Runtime, each step's
                figures; distributed communication is reported "not run here" (`bench comm` needs 2 processes)
11. report      DIR/index.html and DIR/report.md: pictures, curves, Pareto plot, the claims table

Every number in the report is measured by this run; a stage that cannot run says so instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from muon_ad.demo.report import next_commands, write_report
from muon_ad.demo.settings import FULL, QUICK
from muon_ad.demo.stages import (
    Stage,
    publish_student,
    save_json,
    stage_ad,
    stage_distill,
    stage_edge,
    stage_evaluate,
    stage_features,
    stage_memory,
    stage_not_built,
    stage_realtime,
    stage_stream,
    stage_t2i,
    stage_teacher,
)
from muon_ad.models.teacher import load_teacher

log = logging.getLogger("muon_ad.demo")


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
    stages["distill"].results["default_student"] = publish_student(s, students["Muon-AD"])
    timed(stage_evaluate, s, teacher, students, features, out)
    timed(stage_realtime, s, teacher, students["Muon-AD"], out)
    timed(stage_memory, s, teacher, students["Muon-AD"], out)
    timed(stage_stream, s, students["Muon-AD"], out)
    timed(stage_t2i, s, teacher, out)
    timed(stage_edge, s, students["Muon-AD"], out)
    timed(stage_stream, s, stages["edge"].results["export"], out, "edge-stream")
    for stage in stage_not_built():
        stages[stage.name] = stage
    index = write_report(stages, s, out, time.time() - start)
    save_json(out / "stages.json", {name: asdict(st) for name, st in stages.items()})
    log.info("demo: report in %s (%.1f min)", index, (time.time() - start) / 60)
    log.info("try next:\n  %s", "\n  ".join(next_commands(stages)))
    return index
