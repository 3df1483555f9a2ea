import math
from pathlib import Path

import pytest

from muon_ad.config import load_config
from muon_ad.distill.curriculum import Curriculum, CurriculumConfig, PhaseConfig, check_hooks
from muon_ad.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config(**kwargs) -> CurriculumConfig:
    return CurriculumConfig(
        style_alignment=PhaseConfig(steps=3, batch_size=8, lr=1e-3, style_weight=0.8, content_weight=0.2,
                                    keep_rate=(0.95, 0.7)),
        content_refinement=PhaseConfig(steps=4, batch_size=8, lr=5e-4, content_weight=None, adapt_content_weight=True),
        joint_optimisation=PhaseConfig(steps=2, batch_size=4, lr=1e-4, content_weight=None, freeze_style_encoder=True,
                                       qat=True),
        **{"warmup_steps": 0, **kwargs},
    )


def test_phases_switch_at_the_configured_steps_with_their_settings():
    curriculum = Curriculum(config())
    plans = [curriculum.plan(step) for step in range(10)]  # one past the end: the last phase continues
    assert [p.phase for p in plans] == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert [p.step for p in plans if p.phase_started] == [0, 3, 7]
    assert [p.lr for p in plans] == [1e-3] * 3 + [5e-4] * 4 + [1e-4] * 3
    assert [p.batch_size for p in plans] == [8] * 7 + [4] * 3
    assert [p.freeze_style_encoder for p in plans] == [False] * 7 + [True] * 3
    assert [p.qat for p in plans] == [False] * 7 + [True] * 3
    assert [p.keep_rate for p in plans[:3]] == pytest.approx([0.95, 0.825, 0.7])  # linear over the phase
    assert all(p.content_weight == 0.2 for p in plans)  # nothing observed: λ carried over unchanged
    assert CurriculumConfig().total_steps == 1200  # the CPU preset: 200 / 400 / 600


def test_warmup_ramps_the_first_steps():
    curriculum = Curriculum(config(warmup_steps=4))
    # phase 1 is 3 steps: step 3 is already in phase 2, at (4/4) x 5e-4
    assert [curriculum.plan(s).lr for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 5e-4, 5e-4])


def test_content_weight_moves_toward_the_ssim_target_only_in_the_adapting_phase():
    curriculum = Curriculum(config(ssim_target=0.85, adapt_gain=2.0))
    curriculum.observe(curriculum.plan(0), ssim=0.5)  # phase 1 does not adapt
    assert curriculum.content_weight == 0.2
    plan = curriculum.plan(3)
    curriculum.observe(plan, ssim=0.75)  # below the target: more weight on content
    assert curriculum.content_weight == pytest.approx(0.2 * math.exp(2.0 * 0.1))
    up = curriculum.content_weight
    curriculum.observe(plan, ssim=0.95)  # above it: less
    assert curriculum.content_weight == pytest.approx(up * math.exp(-0.2))
    for _ in range(100):
        curriculum.observe(plan, ssim=0.0)
    assert curriculum.content_weight == config().content_weight_range[1]  # clamped
    assert curriculum.plan(7).content_weight == curriculum.content_weight  # phase 3 keeps the adapted λ


def test_resumed_curriculum_continues_without_re_entering_the_phase():
    cfg = config()
    cfg.content_refinement.content_weight = 0.5  # phase 2 starts from its own λ
    first = Curriculum(cfg)
    for step in range(5):
        plan = first.plan(step)
        first.observe(plan, ssim=0.6)
    resumed = Curriculum(cfg)
    resumed.load_state_dict(first.state_dict())
    plan = resumed.plan(5)
    assert not plan.phase_started and plan.content_weight == first.content_weight != 0.5


def test_the_first_phase_needs_a_content_weight():
    with pytest.raises(UserError, match="style_alignment.content_weight"):
        CurriculumConfig(style_alignment=PhaseConfig(content_weight=None))


class _Hook:
    def __init__(self, prunes: bool = False, quantises: bool = False):
        self.prunes, self.quantises = prunes, quantises

    def __call__(self, plan, student, optimizer) -> None:
        pass


def test_compression_asked_for_with_no_hook_to_do_it_is_refused():
    asks = config()  # keep 0.95 -> 0.7 in phase 1, QAT in phase 3
    with pytest.raises(UserError, match="style_alignment.keep_rate=.*no pruning hook"):
        check_hooks(asks, [])
    with pytest.raises(UserError, match="joint_optimisation.qat=true.*no QAT hook"):
        check_hooks(asks, [_Hook(prunes=True)])
    check_hooks(asks, [_Hook(prunes=True), _Hook(quantises=True)])
    check_hooks(CurriculumConfig(), [])  # the defaults ask only for what runs


def test_the_shipped_configs_ask_only_for_what_runs():
    from muon_ad.recipes.distill import DistillConfig

    for name in ("stylize-cpu", "stylize-gpu"):
        check_hooks(load_config(DistillConfig, CONFIGS / f"{name}.yaml", []).curriculum, [])
