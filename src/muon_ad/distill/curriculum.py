"""The three-phase curriculum that drives student distillation, step by step.

1. style alignment: style weight 0.8 / content 0.2, lr 1e-3 (the authors: light pruning, keep 0.95 → 0.7);
2. content refinement: lr 5e-4, the content weight λ adapted toward an SSIM target (0.85) between the
   student's images and their content images (the authors: keep ≥ 0.6);
3. joint optimisation: lr 1e-4, the style encoder frozen (the authors: keep 0.4, quantisation-aware training).

`Curriculum.plan(step)` says what a step does (phase, lr, batch size, loss weights, frozen parts) and
what compression it asks for: `keep_rate` (the fraction of heads/channels a pruner should keep at this
step, linear over each phase) and `qat` (fake-quantise from here on). The trainer applies the plan;
pruning and quantisation plug in as `StepHook`s that read it. A curriculum asking for compression that
no registered hook performs is refused (`check_hooks`), so a config never claims work nothing does.

λ adaptation is a multiplicative controller, λ ← λ·exp(gain·(target − SSIM)), fed with each training
batch's SSIM: below the target the content weight grows, above it the weight shrinks, so the
student trades style for structure until the SSIM settles near the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from muon_ad.checks import fields_within
from muon_ad.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass
class PhaseConfig:
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3  # of every parameter group (Muon's lr is matched to AdamW's: adjust_lr match_rms_adamw)
    style_weight: float = 0.8  # weight of L_distill
    content_weight: float | None = 0.2  # λ, the weight of L_content; None carries over the previous phase's λ
    adapt_content_weight: bool = False  # steer λ toward the SSIM target during this phase
    keep_rate: tuple[float, float] = (1.0, 1.0)  # pruning keep rate at the phase's start and end (needs a pruning hook)
    freeze_style_encoder: bool = False
    qat: bool = False  # quantisation-aware training during this phase (needs a QAT hook)


# The CPU preset trains on the teacher's AD targets (distill.targets), whose L1 needs neither λ nor an SSIM target:
# style and content weights 0, one lr (3e-3) throughout, the style encoder never frozen. Measured (issue #11) against
# the authors' weights (0.8 / 0.2 adapted toward SSIM 0.85): their content gradient is as large as the AD gradient
# and opposite to it (cosine -0.75 to -0.97), so the student stayed the identity map. No pruning or QAT by
# default (the authors' keep rates are in the module docstring; keep_rate < 1 runs muon_ad.compress.PruningHook).
def _style_alignment() -> PhaseConfig:
    return PhaseConfig(steps=200, batch_size=8, lr=3e-3, style_weight=0.0, content_weight=0.0)


def _content_refinement() -> PhaseConfig:
    return PhaseConfig(steps=400, batch_size=8, lr=3e-3, style_weight=0.0, content_weight=None)


def _joint_optimisation() -> PhaseConfig:
    return PhaseConfig(steps=600, batch_size=8, lr=3e-3, style_weight=0.0, content_weight=None)


@dataclass
class CurriculumConfig:
    """Defaults: the CPU preset (configs/stylize-cpu.yaml), 200 / 400 / 600 steps at batch 8 on AD targets; the
    authors' shape (500 / 1000 / 1500 iterations, batch 32 / 32 / 16, their loss weights) is configs/stylize-gpu.yaml."""

    style_alignment: PhaseConfig = field(default_factory=_style_alignment)
    content_refinement: PhaseConfig = field(default_factory=_content_refinement)
    joint_optimisation: PhaseConfig = field(default_factory=_joint_optimisation)
    warmup_steps: int = 20  # linear lr warm-up at the start of the run
    ssim_target: float = 0.85
    adapt_gain: float = 0.2  # λ ← λ·exp(gain·(target − SSIM)) after each adapting step
    content_weight_range: tuple[float, float] = (0.01, 10.0)  # λ is kept inside this range

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a one-line UserError for an unusable schedule (also run by `Curriculum`: overrides skip
        __post_init__)."""
        if self.style_alignment.content_weight is None:
            raise UserError("curriculum.style_alignment.content_weight must be set (there is no earlier phase)")
        for name, phase in self.phases():
            fields_within(f"curriculum.{name}", phase, ("steps",), 0)
            fields_within(f"curriculum.{name}", phase, ("batch_size",), 1)
            fields_within(f"curriculum.{name}", phase, ("lr",), 0, above=True)
            fields_within(f"curriculum.{name}", phase, ("style_weight",), 0)
            if len(phase.keep_rate) != 2 or not all(0 < k <= 1 for k in phase.keep_rate):
                raise UserError(f"curriculum.{name}.keep_rate must be two rates in (0, 1], got {list(phase.keep_rate)}")
            if phase.content_weight is not None:
                fields_within(f"curriculum.{name}", phase, ("content_weight",), 0)
        fields_within("curriculum", self, ("warmup_steps",), 0)
        fields_within("curriculum", self, ("ssim_target",), 0, 1)

    def phases(self) -> list[tuple[str, PhaseConfig]]:
        return [("style_alignment", self.style_alignment), ("content_refinement", self.content_refinement),
                ("joint_optimisation", self.joint_optimisation)]

    def uses_teacher_terms(self) -> bool:
        """Whether a phase that runs weights the teacher's terms (L_AD + KL, or L_content, λ carried over where a
        phase leaves it None, or adapted): the steps where the objective has two gradients to project."""
        weight = 0.0
        for _, phase in self.phases():
            weight = weight if phase.content_weight is None else phase.content_weight
            if phase.steps and (phase.style_weight != 0 or weight != 0 or phase.adapt_content_weight):
                return True
        return False

    @property
    def total_steps(self) -> int:
        return sum(phase.steps for _, phase in self.phases())


@dataclass(frozen=True)
class StepPlan:
    """What one training step does."""

    step: int
    phase: int  # 1, 2 or 3
    name: str
    lr: float
    batch_size: int
    style_weight: float
    content_weight: float
    keep_rate: float
    freeze_style_encoder: bool
    qat: bool
    phase_started: bool  # the first step of a phase: the trainer logs the change


class StepHook(Protocol):
    """Runs before every training step with the step's plan, the student and the optimizer: where pruning
    (reading `plan.keep_rate`; masks through `optimizer.set_mask`) and quantisation-aware training (`plan.qat`)
    plug in. `prunes` / `quantises` say which of the curriculum's requests the hook performs."""

    prunes: bool
    quantises: bool

    def __call__(self, plan: StepPlan, student: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None: ...


def check_hooks(cfg: CurriculumConfig, hooks: Sequence[StepHook]) -> None:
    """Refuse, in one line, a curriculum that asks for pruning or QAT that none of `hooks` performs."""
    for name, phase in cfg.phases():
        if min(phase.keep_rate) < 1.0 and not any(hook.prunes for hook in hooks):
            raise UserError(f"curriculum.{name}.keep_rate={list(phase.keep_rate)} asks for pruning, but no pruning "
                            "hook is registered (muon-ad distill adds muon_ad.compress.PruningHook): set it to [1.0, 1.0]")
        if phase.qat and not any(hook.quantises for hook in hooks):
            raise UserError(f"curriculum.{name}.qat=true asks for quantisation-aware training, but no QAT hook is "
                            "registered (muon_ad.compress.qat.QatHook performs it; recipes.distill adds it): set it to false")


class Curriculum:
    """Turns a step number into a `StepPlan`, and adapts λ from observed SSIM. Resumable (state_dict)."""

    def __init__(self, cfg: CurriculumConfig):
        cfg.check()
        self.cfg = cfg
        self.content_weight = cfg.style_alignment.content_weight
        self.phase = 0  # the phase the last plan was in (0: none yet)

    def plan(self, step: int) -> StepPlan:
        """The plan of `step` (0-based; call once per step, in order). Past the end, the last phase continues."""
        start = 0
        for index, (name, phase) in enumerate(self.cfg.phases(), start=1):
            if step < start + phase.steps or index == 3:
                break
            start += phase.steps
        started = index != self.phase
        if started and phase.content_weight is not None:
            self.content_weight = phase.content_weight  # entering a phase (not resuming inside it)
        self.phase = index
        progress = min(1.0, (step - start) / max(1, phase.steps - 1))
        keep = phase.keep_rate[0] + (phase.keep_rate[1] - phase.keep_rate[0]) * progress
        warmup = min(1.0, (step + 1) / self.cfg.warmup_steps) if self.cfg.warmup_steps > 0 else 1.0
        return StepPlan(step=step, phase=index, name=name, lr=phase.lr * warmup, batch_size=phase.batch_size,
                        style_weight=phase.style_weight, content_weight=self.content_weight, keep_rate=keep,
                        freeze_style_encoder=phase.freeze_style_encoder, qat=phase.qat, phase_started=started)

    def observe(self, plan: StepPlan, ssim: float) -> None:
        """Adapt λ toward the SSIM target after a step of an adapting phase."""
        if not dict(self.cfg.phases())[plan.name].adapt_content_weight:
            return
        low, high = self.cfg.content_weight_range
        change = math.exp(self.cfg.adapt_gain * (self.cfg.ssim_target - ssim))
        self.content_weight = min(high, max(low, self.content_weight * change))

    def state_dict(self) -> dict:
        return {"content_weight": self.content_weight, "phase": self.phase}

    def load_state_dict(self, state: dict) -> None:
        self.content_weight = float(state["content_weight"])
        self.phase = int(state["phase"])  # so resuming inside a phase does not re-enter it (and reset λ)
