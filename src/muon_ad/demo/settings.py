"""How big each stage of the demo is: QUICK (what the test runs, about two minutes) and FULL (`make demo`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from muon_ad.bench import ad_convergence, distill_convergence
from muon_ad.compress.prune import EDGE_ATTENTION_BLOCKS, EDGE_FINETUNE_STEPS, EDGE_KEEP

TEACHER_CONFIG = "configs/teacher-tiny.yaml"
T2I_CONFIG = "configs/t2i-tiny.yaml"


@dataclass
class DemoSettings:
    """Sizes of every stage; QUICK is what the test runs, FULL what `make demo` runs."""

    quick: bool
    teacher_overrides: list[str]  # applied to configs/teacher-tiny.yaml (quick: a tiny run into DIR)
    feature_steps: int
    ad: ad_convergence.Settings
    distill: distill_convergence.Settings
    eval_pairs: int  # held-out labelled pairs every row (identity, AD Adam/Muon, both students) is scored on
    teacher_ad_steps: int  # AD's budget on them (published: 200)
    judge_images: int  # the palette/family judges of the style-strength measure (eval.recognition)
    judge_steps: int
    resolution: int  # of the realtime and memory measurements
    stream_size: int
    stream_frames: int
    latency_repeats: int = 10
    t2i_overrides: list[str] = field(default_factory=list)  # applied to configs/t2i-tiny.yaml (the t2i stage)
    edge_keep: float = EDGE_KEEP  # the edge stage: channels and heads the pruned student keeps (bench prune's setting)
    edge_attention_blocks: int | None = EDGE_ATTENTION_BLOCKS  # and its transformer blocks (None: all)
    edge_finetune_steps: int = EDGE_FINETUNE_STEPS  # its recovery fine-tune on the run's AD-target bank
    edge_calibration: int = 64  # (content, style) pairs the int8 export is calibrated on


QUICK = DemoSettings(
    quick=True,
    teacher_overrides=["model.image_size=32", "data.size=32", "data.textures=48", "data.scenes=16", "data.photos=16",
                       "train.vae_steps=8", "train.unet_steps=16", "train.batch_size=8", "train.vae_crop=16",
                       "train.warmup_steps=4", "train.checkpoint_every=1000", "train.sample_steps=4"],
    feature_steps=20,
    ad=ad_convergence.Settings(size=32, steps=6, budgets=[3, 4, 6], pairs=1, exemplars=0, eval_timesteps=2,
                               adam_grid=[0.05], muon_grid=[0.05]),
    distill=distill_convergence.Settings(steps=6, batch_size=2, val_every=3, val_pairs=4, images=10, target_pairs=8,
                                         target_steps=2, student=distill_convergence.QUICK.student),
    eval_pairs=4,
    teacher_ad_steps=4,
    judge_images=160,
    judge_steps=40,
    resolution=64,
    stream_size=64,
    stream_frames=12,
    latency_repeats=5,
    edge_finetune_steps=2,
    edge_calibration=8,
    t2i_overrides=["schedule.compress_steps=6", "schedule.consistency_steps=6", "schedule.batch_size=4",
                   "data.textures=48", "data.scenes=16", "data.val_count=8", "validation.every=6",
                   "validation.grid_prompts=4", "consistency.sample_steps=2"],
)
FULL = DemoSettings(  # sized so the whole demo fits in about 20 minutes on 2 CPU cores
    quick=False,
    teacher_overrides=[],
    feature_steps=200,
    ad=ad_convergence.Settings(size=64, steps=40, budgets=[10, 13, 20, 27, 32, 40], pairs=1, exemplars=0,
                               eval_timesteps=4, adam_grid=[0.05], muon_grid=[0.05, 0.1]),
    distill=distill_convergence.RECIPE,  # the recipe at full length: a shorter one does not stylise visibly
    eval_pairs=16,
    teacher_ad_steps=100,  # AD at 100 steps: style FID-domain 8.1 vs 7.0 at 200 (bench stylization pairs), half the time
    judge_images=1200,
    judge_steps=500,
    resolution=256,
    stream_size=256,
    stream_frames=48,
)
