"""`muon-ad bench ad-convergence`: attention-distillation synthesis with Muon vs Adam, same loss, same budget.

Setting. The built-in teacher, its default AD layers and the synthesis loop of `muon_ad.synthesis` (one
optimiser step per DDIM timestep, high to low): style transfer (content weight 0.25, latent initialised
from the content) on procedural content/style pairs, and texture synthesis (noise init, AD only) on an
exemplar; all images are new to the teacher (another seed than its training data).

What "iterations to reach Adam's final loss" means here. The loss of step i is taken at timestep t_i,
and the schedule is a coarse-to-fine curriculum, so the loss at step 60 of a 200-step run (t ~ 700) cannot
be compared with the loss at its end (t = 1); measured on a fixed mix of timesteps, style-transfer runs
even rise before they fall. So every run is a *complete* synthesis over the DDIM schedule of its budget,
and all of them end at the same last timestep (t = 1), where the final loss of the returned latent is
measured (AD + 0.25 content; AD alone for textures). Adam and Muon first run the full budget N. If Muon
ends at or below Adam, Muon also runs every shorter budget in `budgets`, and `muon_iters_to_adam_final`
is the smallest n whose final loss, and that of every larger budget, is at or below Adam's N-step final
loss (a lucky short run does not count): speedup = N / n. If Muon ends above Adam, it did not reach
Adam's final loss in N steps; then Adam runs the shorter budgets to find the n at which it already
matches Muon's N-step result, and speedup = n / N < 1 (Adam needs only that fraction of the steps).
Figures are medians over the evaluation cases, each an independent draw of images (and texture noise); mean ±
sample standard deviation over them too (`speedup_mean`, `speedup_std`; `seeds` = the number of cases).
`objective_ratio_at_match` checks quality beyond the last
timestep: the matching run over the run it matched, on the loss averaged over `eval_timesteps`
timesteps spread over the schedule (1 = equal; above 1 the match is worse there).

Fair tuning. On two held-out cases (a pair and an exemplar, not among the evaluation cases) each optimiser
runs the full budget N for every lr of the same grid and keeps the lr with the lowest geometric mean of
its final losses (the two cases' loss scales differ). Muon's grid runs in both latent layouts ("channels":
a C x HW matrix per sample, "spatial": an H x W matrix per channel): that is the layout measurement, and
the better layout is the one raced. Adam's betas and Muon's momentum keep their defaults (0.9/0.999,
Nesterov 0.95), and the lrs tuned for N are kept for the shorter budgets (for both optimisers alike). Runs of one case go in lockstep (one batched UNet pass per step; samples never interact).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from muon_ad import DEFAULT_TEACHER
from muon_ad.bench.common import BenchOutput, median, require_teacher
from muon_ad.data.images import save_image_atomic
from muon_ad.data.procedural import make_scene, make_texture
from muon_ad.models.teacher import Teacher, load_teacher
from muon_ad.optim.latent import LAYOUTS, LatentMuon
from muon_ad.synthesis import ADObjective, ddim_timesteps, fit_size, size_multiple
from muon_ad.synthesis.ad_loop import Factory, ad_step, split_samples
from muon_ad.synthesis.transfer import CONTENT_WEIGHT, image_batch
from muon_ad.visual import image_grid

SEED = 12345  # not the teacher's data seed (0): every image here is new to the teacher


@dataclass
class Settings:
    size: int = 64  # image side in pixels
    steps: int = 200  # the full budget N: DDIM timesteps = optimiser steps (published for style transfer)
    budgets: list[int] = field(default_factory=lambda: [40, 50, 62, 80, 100, 133, 160, 200])  # N/5 ... N/3.2 ... N
    pairs: int = 3  # evaluation content/style pairs
    exemplars: int = 1  # evaluation textures
    eval_timesteps: int = 8
    adam_grid: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1])  # the published 0.05 included
    muon_grid: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1])


FULL = Settings()
QUICK = Settings(size=32, steps=40, budgets=[10, 13, 20, 27, 32, 40], pairs=1, exemplars=0, eval_timesteps=4,
                 adam_grid=[0.05, 0.1], muon_grid=[0.05, 0.1])


@dataclass
class Case:
    name: str
    style: Image.Image
    content: Image.Image | None  # None: texture synthesis from noise


def make_cases(settings: Settings) -> tuple[list[Case], list[Case]]:
    """(held-out tuning cases: a pair and an exemplar, evaluation cases), all procedural and seeded."""
    rng = np.random.default_rng(SEED)
    families = ["stripes", "dots", "checks", "bricks", "cells", "noise", "plaid", "hexagons"]
    palettes = ["blue_orange", "red_white", "teal_coral", "purple_pink", "green_yellow"]

    def texture(i: int) -> Image.Image:
        return Image.fromarray(make_texture(families[i], palettes[i % len(palettes)], settings.size, rng))

    def pair(i: int) -> Case:
        kind = ["landscape", "gradient", "plain"][i % 3]
        return Case(f"{kind}+{families[i]}", texture(i), Image.fromarray(make_scene(settings.size, rng, kind)[0]))

    def exemplar(i: int) -> Case:
        return Case(f"texture:{families[i]}", texture(i), None)

    held_out = [pair(len(families) - 1), exemplar(len(families) - 2)]
    return held_out, [pair(i) for i in range(settings.pairs)] + [exemplar(settings.pairs + i) for i in range(settings.exemplars)]


def adam(lr: float) -> Factory:
    return lambda latent: torch.optim.Adam([latent], lr=lr)


def muon(lr: float, layout: str) -> Factory:
    return lambda latent: LatentMuon([latent], lr=lr, layout=layout)


class Problem:
    """One case at a fixed size: its objective (reference features cached), initial latent and scores."""

    def __init__(self, teacher: Teacher, case: Case, settings: Settings):
        size = fit_size(settings.size, settings.size, settings.size, size_multiple(teacher))
        with torch.no_grad():
            style = teacher.encode_images(image_batch(case.style, size))
            content = teacher.encode_images(image_batch(case.content, size)) if case.content is not None else None
        noise = torch.randn(style.shape, generator=torch.Generator().manual_seed(SEED)).to(style)
        self.name, self.teacher, self.init = case.name, teacher, content if content is not None else noise
        self.objective = ADObjective(teacher, style, content, CONTENT_WEIGHT if content is not None else 0.0, cache=True)
        self.eval_timesteps = [int(t) for t in ddim_timesteps(teacher, settings.eval_timesteps)]

    def run(self, runs: list[tuple[Factory, int]]) -> tuple[Tensor, list[float], list[float]]:
        """Each run = (optimiser factory, budget n): a complete n-step synthesis. All go in lockstep, each
        on its own schedule; finished runs drop out. Returns the final latents, their final losses (at the
        last timestep, after the last update) and their mean loss over the evaluation timesteps."""
        schedules = [ddim_timesteps(self.teacher, n).tolist() for _, n in runs]
        self.objective.references(sorted({t for s in schedules for t in s} | set(self.eval_timesteps)))  # batched, once
        samples = split_samples(self.init.expand(len(runs), -1, -1, -1))
        optimizers = [make(x) for (make, _), x in zip(runs, samples)]
        for i in range(max(len(s) for s in schedules)):
            active = [k for k, s in enumerate(schedules) if i < len(s)]
            ad_step(self.objective, [samples[k] for k in active], [optimizers[k] for k in active],
                    [schedules[k][i] for k in active])
        latents = torch.cat(samples).detach()
        with torch.no_grad():
            final = self.objective(latents, [s[-1] for s in schedules])["loss"].tolist()
            n = len(self.eval_timesteps)
            mixed = self.objective(latents.repeat_interleave(n, dim=0), self.eval_timesteps * len(runs))["loss"]
        return latents, final, mixed.view(len(runs), n).mean(dim=1).tolist()


def tune(problems: list[Problem], settings: Settings) -> dict:
    """Final loss on each held-out case for every lr of each grid at the full budget; each optimiser keeps
    the lr with the lowest geometric mean over the cases."""
    runs = [("adam", lr, adam(lr)) for lr in settings.adam_grid]
    runs += [(f"muon_{layout}", lr, muon(lr, layout)) for layout in LAYOUTS for lr in settings.muon_grid]
    finals = [problem.run([(make, settings.steps) for _, _, make in runs])[1] for problem in problems]
    grid: dict[str, dict[str, list[float]]] = {}
    for i, (name, lr, _) in enumerate(runs):
        grid.setdefault(name, {})[str(lr)] = [case[i] for case in finals]
    geomean = {name: {lr: math.exp(sum(map(math.log, v)) / len(v)) for lr, v in by_lr.items()} for name, by_lr in grid.items()}
    return {"final_loss_by_lr": grid, "geomean_by_lr": geomean,
            "best_lr": {name: float(min(by_lr, key=by_lr.get)) for name, by_lr in geomean.items()}}


def budget_to_reach(finals: dict[int, float], target: float) -> int | None:
    """The smallest budget n whose final loss, and that of every larger budget, is at or below `target`."""
    reached = None
    for n in sorted(finals, reverse=True):
        if finals[n] > target:
            break
        reached = n
    return reached


def race(problem: Problem, adam_run: Factory, muon_run: Factory, settings: Settings) -> tuple[dict, Tensor, list[str]]:
    """Adam and Muon at the full budget N; then the one that got further runs every shorter budget, to find
    the fewest steps at which it matches the other's N-step final loss. Returns the case's record, and
    latents and labels for the picture (Adam N, Muon N, the matching shorter run)."""
    N = settings.steps
    latents, final, mixed = problem.run([(adam_run, N), (muon_run, N)])
    leader = "muon" if final[1] <= final[0] else "adam"
    lead, behind = (1, 0) if leader == "muon" else (0, 1)
    shorter = sorted(n for n in settings.budgets if n < N)
    short_latents, short_final, short_mixed = problem.run([((adam_run, muon_run)[lead], n) for n in shorter])
    finals = {**dict(zip(shorter, short_final)), N: final[lead]}
    n = budget_to_reach(finals, final[behind])  # <= N: the leader reaches the target at N at the latest
    at_n = (short_latents[shorter.index(n)], short_mixed[shorter.index(n)]) if n < N else (latents[lead], mixed[lead])
    record = {
        "case": problem.name, "adam_final_loss": final[0], "muon_final_loss": final[1], "leader": leader,
        f"{leader}_final_loss_by_budget": finals, f"{leader}_iters_to_{('adam', 'muon')[behind]}_final": n,
        "speedup": N / n if leader == "muon" else n / N,
        "adam_objective": mixed[0], "muon_objective": mixed[1], "objective_ratio_at_match": at_n[1] / mixed[behind],
    }
    return record, torch.stack([latents[0], latents[1], at_n[0]]), [f"Adam {N}", f"Muon {N}", f"{leader.title()} {n}"]


def measure(teacher: Teacher, settings: Settings, picture: str | Path | None = None) -> BenchOutput:
    """Tune on the held-out cases, then race Adam against Muon on each evaluation case (see the module doc)."""
    if settings.steps not in settings.budgets:
        raise ValueError(f"budgets {settings.budgets} must include the full budget {settings.steps}")
    held_out, cases = make_cases(settings)
    tuning = tune([Problem(teacher, case, settings) for case in held_out], settings)
    lrs = tuning["best_lr"]
    layout_loss = {lay: tuning["geomean_by_lr"][f"muon_{lay}"][str(lrs[f"muon_{lay}"])] for lay in LAYOUTS}
    layout = min(LAYOUTS, key=layout_loss.get)
    per_case, tiles, labels = [], [], []
    for case in cases:
        problem = Problem(teacher, case, settings)
        record, latents, names = race(problem, adam(lrs["adam"]), muon(lrs[f"muon_{layout}"], layout), settings)
        per_case.append(record)
        with torch.no_grad():
            decoded = teacher.decode_latents(torch.cat([problem.init, latents])).cpu()
        first = decoded[0] if case.content is not None else torch.ones_like(decoded[0])
        tiles += [first, image_batch(case.style, (decoded.shape[-1], decoded.shape[-2]))[0], *decoded[1:]]
        labels += ["content" if case.content is not None else "(texture)", "style", *names]
    if picture is not None:
        save_image_atomic(image_grid(torch.stack(tiles), labels, ncols=5, scale=2), picture)

    N, muon_led = settings.steps, [row for row in per_case if row["leader"] == "muon"]
    iters = median([row["muon_iters_to_adam_final"] if row["leader"] == "muon" else math.inf for row in per_case])
    metrics = {
        "adam_final_loss": median([row["adam_final_loss"] for row in per_case]),
        "muon_final_loss": median([row["muon_final_loss"] for row in per_case]),
        "final_loss_ratio": median([row["muon_final_loss"] / row["adam_final_loss"] for row in per_case]),  # Muon / Adam at N
        "muon_iters_to_adam_final": None if math.isinf(iters) else iters,  # None: the median case did not get there in N
        "adam_iters": N,
        "speedup": median([row["speedup"] for row in per_case]),
        "speedup_mean": statistics.fmean(row["speedup"] for row in per_case),
        "speedup_std": statistics.stdev(row["speedup"] for row in per_case) if len(per_case) > 1 else 0.0,
        "seeds": len(per_case),  # each case is an independent draw of images (and texture noise)
        "speedup_min": min(row["speedup"] for row in per_case),
        "speedup_max": max(row["speedup"] for row in per_case),
        "cases_muon_reached": len(muon_led),
        "cases": len(per_case),
        "objective_ratio_at_match": median([row["objective_ratio_at_match"] for row in per_case]),
        "adam_lr": lrs["adam"],
        "muon_lr": lrs[f"muon_{layout}"],
        **{f"muon_lr_{lay}": lrs[f"muon_{lay}"] for lay in LAYOUTS},
        "adam_heldout_geomean_loss": tuning["geomean_by_lr"]["adam"][str(lrs["adam"])],
        **{f"muon_{lay}_heldout_geomean_loss": layout_loss[lay] for lay in LAYOUTS},
    }
    config = {**asdict(settings), "teacher": DEFAULT_TEACHER, "seed": SEED, "layers": problem.objective.capture.layers,
              "muon_layout": layout, "tuning_cases": [case.name for case in held_out], "tuning": tuning,
              "per_case": per_case, "picture": str(picture) if picture else None}
    baseline = (f"Adam (lr {lrs['adam']:g}; published default 0.05; both lrs tuned on held-out cases) on the same AD "
                f"loss, images, teacher and {N}-step DDIM schedule; Muon layout '{layout}', lr {lrs[f'muon_{layout}']:g}; "
                f"shorter complete schedules: {sorted(settings.budgets)} steps")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline)


def run(quick: bool, device: str) -> BenchOutput:
    require_teacher(DEFAULT_TEACHER)
    teacher = load_teacher(DEFAULT_TEACHER, device=device)
    picture = Path("bench-results") / f"ad-convergence{'-quick' if quick else ''}.png"
    return measure(teacher, QUICK if quick else FULL, picture)
