"""`muon-ad bench prune`: the distilled student before vs after pruning + compaction + a recovery fine-tune.

Setting. One Muon-AD student distilled with the recipe (`bench distill-convergence`'s `RECIPE`: configs/stylize-cpu's
length; its run is reused when it is already complete), then `muon-ad prune` (`recipes.compress.prune`) at
`keep` and `attention_blocks` (the edge path's setting) with the entropy criterion (attention-row entropy +
gradient-sensitivity EMA) and, beside it, the L2 magnitude criterion: torch-pruning cuts every coupled group by the
same ratio and the three transformer blocks are the same size, so both pruned students have the same widths, FLOPs
and parameters; each gets the same recovery fine-tune on the run's AD-target bank. What removing transformer blocks
costs is measured beside: the entropy criterion at `keep` with every block kept (`*_all_blocks`).

Figures (keys of shared/BENCHMARKS.md). flops_reduction and params_reduction: 1 − after/before, FLOPs counted by
torch's FlopCounterMode for one (content, style) pass at `resolution`. latency_ratio: median after / median
before of the runtime's one path (`run_student`, style encoded once), blocks of frames taking turns so machine load hits
both alike. Quality on QUALITY_PAIRS held-out labelled pairs at the teacher's size, scored by one FID-domain network
(`bench distill-convergence`'s `StyleReference`, which also gives the identity map's and AD's style FID):
fid_delta (after / before − 1, style FID-domain), ssim_delta (after − before, to the contents),
style_strength_ratio_delta (after − before), fid_delta_magnitude (the magnitude criterion's fid_delta). The fine-tune is extra training, so the unpruned
student gets the same fine-tune too (`unpruned_finetuned`) and the deltas against it are reported beside
(`fid_delta_vs_unpruned_finetuned`, ...): what pruning costs, without the fine-tune's own gain.
latency_ratio_ort: the same two students exported to fp32 ONNX (`recipes.export`) and run by ONNX Runtime.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from muon_ad.bench import distill_convergence
from muon_ad.bench.common import BenchOutput, median, require_teacher, sample_pair
from muon_ad.compress.prune import EDGE_ATTENTION_BLOCKS, EDGE_FINETUNE_STEPS, EDGE_KEEP
from muon_ad.data.images import save_image_atomic, to_tensor
from muon_ad.eval import compute_fid, ssim
from muon_ad.eval.profile import count_flops, count_parameters, interleaved_ms
from muon_ad.eval.style_strength import style_strength_ratio
from muon_ad.eval.stylization import stylize_pairs
from muon_ad import DEFAULT_TEACHER
from muon_ad.recipes.compress import prune
from muon_ad.recipes.distill import distill
from muon_ad.recipes.export import export_student
from muon_ad.runtime import load_backend
from muon_ad.runtime.backends import encode_style, run_student
from muon_ad.visual import image_grid

CRITERIA = ("entropy", "magnitude")
QUALITY_PAIRS = 128  # held-out labelled pairs the full bench scores quality on (see FULL)


@dataclass
class Settings:
    keep: float = EDGE_KEEP
    attention_blocks: int | None = EDGE_ATTENTION_BLOCKS
    finetune_steps: int = 300
    resolution: int = 256
    latency_repeats: int = 15
    grid_pairs: int = 6
    student: distill_convergence.Settings = field(default_factory=lambda: distill_convergence.RECIPE)


# The recipe's student; its style-strength scale is AD with Adam at 100 steps (the published 200 cost ~2x the
# bench on a shared machine). Quality on QUALITY_PAIRS held-out labelled pairs, not the recipe's 16: on 16 one
# pruned student's fid_delta ranged from +4 % to +45 % over four disjoint sets of pairs (the identity map from 42 to
# 63), too wide for a ±10 % goal. AD costs ~3 s a pair, so the extra pairs add ~6 min to the bench.
FULL = Settings(finetune_steps=EDGE_FINETUNE_STEPS,
                student=replace(distill_convergence.RECIPE, ad_steps=100, style_pairs=QUALITY_PAIRS))
QUICK = Settings(finetune_steps=4, latency_repeats=3, grid_pairs=4, student=distill_convergence.QUICK)


def interleaved_latency(folders: dict[str, Path], resolution: int, repeats: int, device: str) -> dict[str, list[float]]:
    """Milliseconds of one stylised frame per student, in blocks of consecutive frames taking turns
    (`eval.profile.interleaved_ms`)."""
    content, style = (to_tensor(image).unsqueeze(0) for image in sample_pair(resolution))
    runs = {}
    for name, folder in folders.items():
        backend = load_backend(folder, device)
        code = encode_style(backend, style)
        runs[name] = (lambda b=backend, c=code: run_student(b, content, c))
    return interleaved_ms(runs, repeats)


def measure(settings: Settings, out: Path, device: str) -> BenchOutput:
    require_teacher(DEFAULT_TEACHER)
    # Its run is OUT/base/muon, its AD-target bank OUT/ad-targets-data0.*: quick and full never share one.
    base_cfg = distill_convergence.bench_config(settings.student, out / "base", device)
    base = distill(base_cfg)  # resumes (and returns at once) when the run is complete
    folders = {"before": base}
    # keep 1: the unpruned student with the same fine-tune, so what the extra steps alone do is seen beside pruning
    blocks = settings.attention_blocks
    for name, criterion, keep, kept_blocks in (*((c, c, settings.keep, blocks) for c in CRITERIA),
                                               ("entropy_all_blocks", "entropy", settings.keep, None),
                                               ("unpruned_finetuned", "magnitude", 1.0, None)):
        target = out / f"pruned-{name}"
        for stale in (target, target.with_name(f"{target.name}-finetune")):
            shutil.rmtree(stale, ignore_errors=True)  # a leftover fine-tune would be resumed, not measured
        folders[name] = prune(base, keep, target, criterion, settings.finetune_steps, attention_blocks=kept_blocks)

    content, style = (to_tensor(image).unsqueeze(0) for image in sample_pair(settings.resolution))
    models = {name: load_backend(folder, device).student for name, folder in folders.items()}
    flops = {name: count_flops(m, content.to(device), style.to(device)) for name, m in models.items()}
    params = {name: count_parameters(m) for name, m in models.items()}
    exports = {}
    for name in ("before", "entropy", "entropy_all_blocks"):  # the ONNX Runtime runtime path of each, fp32
        shutil.rmtree(out / f"onnx-{name}", ignore_errors=True)
        exports[f"{name}_ort"] = export_student(folders[name], out / f"onnx-{name}", "fp32")
    latency = interleaved_latency({**{k: folders[k] for k in ("before", *CRITERIA, "entropy_all_blocks")}, **exports},
                                  settings.resolution, settings.latency_repeats, device)

    reference = distill_convergence.StyleReference.build(settings.student, device)
    images, fid, similarity, strength = {}, {}, {}, {}
    for name, folder in folders.items():
        images[name] = stylize_pairs(load_backend(folder, device), reference.contents, reference.styles)
        fid[name] = compute_fid(reference.styles, images[name], reference.feature)
        similarity[name] = ssim(images[name], reference.contents)
        strength[name] = style_strength_ratio(reference.style_fid_identity, reference.style_fid_ad, fid[name])

    metrics = {
        "flops_reduction": 1.0 - flops["entropy"] / flops["before"],
        "params_reduction": 1.0 - params["entropy"] / params["before"],
        "latency_ratio": median(latency["entropy"]) / median(latency["before"]),
        "latency_ratio_ort": median(latency["entropy_ort"]) / median(latency["before_ort"]),
        "fid_delta": fid["entropy"] / fid["before"] - 1.0,
        "ssim_delta": similarity["entropy"] - similarity["before"],
        "style_strength_ratio_delta": strength["entropy"] - strength["before"],
        "fid_delta_magnitude": fid["magnitude"] / fid["before"] - 1.0,
        "fid_delta_vs_unpruned_finetuned": fid["entropy"] / fid["unpruned_finetuned"] - 1.0,
        "fid_delta_magnitude_vs_unpruned_finetuned": fid["magnitude"] / fid["unpruned_finetuned"] - 1.0,
        "ssim_delta_vs_unpruned_finetuned": similarity["entropy"] - similarity["unpruned_finetuned"],
        "style_strength_ratio_delta_vs_unpruned_finetuned": strength["entropy"] - strength["unpruned_finetuned"],
        "style_strength_ratio_delta_magnitude_vs_unpruned_finetuned":
            strength["magnitude"] - strength["unpruned_finetuned"],
        "flops_reduction_magnitude": 1.0 - flops["magnitude"] / flops["before"],
        "flops_reduction_all_blocks": 1.0 - flops["entropy_all_blocks"] / flops["before"],
        "latency_ratio_all_blocks": median(latency["entropy_all_blocks"]) / median(latency["before"]),
        "latency_ratio_ort_all_blocks": median(latency["entropy_all_blocks_ort"]) / median(latency["before_ort"]),
        "fid_delta_all_blocks": fid["entropy_all_blocks"] / fid["before"] - 1.0,
        "latency_ratio_magnitude": median(latency["magnitude"]) / median(latency["before"]),
        "ssim_delta_magnitude": similarity["magnitude"] - similarity["before"],
        "style_strength_ratio_delta_magnitude": strength["magnitude"] - strength["before"],
        **{f"style_fid_{name}": value for name, value in fid.items()},
        **{f"ssim_{name}": value for name, value in similarity.items()},
        **{f"style_strength_ratio_{name}": value for name, value in strength.items()},
        **{f"gflops_{name}": value / 1e9 for name, value in flops.items()},
        **{f"latency_ms_{name}": median(value) for name, value in latency.items()},
        "style_fid_identity": reference.style_fid_identity, "style_fid_ad": reference.style_fid_ad,
    }
    n = min(settings.grid_pairs, len(reference.contents))
    tiles = torch.cat([reference.contents[:n], reference.styles[:n], *(images[k][:n] for k in folders)])
    labels = ["content"] * n + ["style"] * n + [f"{k} (FID-d {fid[k]:.1f})" for k in folders for _ in range(n)]
    grid = save_image_atomic(image_grid(tiles, labels, ncols=n), out.with_name(f"{out.name}-samples.png"))
    config = {"settings": {k: v for k, v in asdict(settings).items() if k != "student"},
              "student_recipe": {k: v for k, v in asdict(settings.student).items() if k != "student"},
              "folders": {k: str(v) for k, v in folders.items()}, "teacher": DEFAULT_TEACHER,
              "latency_ratio_ort": "fp32 ONNX Runtime exports of the entropy-pruned and the unpruned student",
              "flops": "torch.utils.flop_counter.FlopCounterMode, one (content, style) pass at resolution",
              "samples": str(grid)}
    baseline = ("the same student before pruning; the L2-magnitude criterion at the same keep rate (same widths and "
                "FLOPs) beside the entropy one")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline,
                       repeats={f"latency_ms_{k}": v for k, v in latency.items()})


def run(quick: bool, device: str) -> BenchOutput:
    out = Path("bench-results") / f"prune{'-quick' if quick else ''}"
    return measure(QUICK if quick else FULL, out, device)
