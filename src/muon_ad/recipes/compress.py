"""Recipe: prune a trained student, compact it and fine-tune it back (`muon-ad prune STUDENT --keep R`).

Reads top to bottom: load the student → score it on built-in (content, style) pairs (a seed neither training
nor evaluation uses) and cut it to `keep` of its channels and heads, and optionally to `attention_blocks` of its
transformer blocks (`compress.prune_student`, entropy or magnitude criterion) → optionally a recovery fine-tune
of `finetune_steps` on the AD-target bank, which is the distillation recipe itself (`recipes.distill.distill` with
the compacted student as its starting point and one phase; the bank is the original run's cache when it matches)
→ save the compacted student (safetensors + widths.json). The fine-tune's run folder (logs, checkpoints, samples)
is OUT-finetune; it resumes like any distillation run, for the same pruning only (PRUNING).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from muon_ad import checks
from muon_ad.compress.prune import check_keep_rate, prune_student, save_pruned, transformer_blocks
from muon_ad.config import load_config
from muon_ad.distill.curriculum import PhaseConfig
from muon_ad.errors import UserError
from muon_ad.io import write_text_atomic
from muon_ad.eval.stylization import builtin_pairs
from muon_ad.models.student import Student, load_student
from muon_ad.models.teacher import TinyTeacherConfig, teacher_folder
from muon_ad.recipes.distill import DistillConfig, distill

log = logging.getLogger("muon_ad.compress")

PRUNING = "pruning.json"  # in OUT-finetune: which pruning it fine-tunes (another pruning must not resume it)
SCORING_SEED = 77  # the pairs heads and channels are scored on: not the teacher's (0), the styles' (1), eval's (4242)


def scoring_batches(student: Student, count: int = 4, size: int = 8) -> list:
    """`count` batches of `size` built-in (content, style) pairs at the student's style size (the built-in teacher's
    size for a student that takes styles of any size)."""
    style_size = student.config.style_size or TinyTeacherConfig.image_size
    contents, styles = builtin_pairs(count * size, style_size, SCORING_SEED)
    return [(contents[i : i + size], styles[i : i + size]) for i in range(0, count * size, size)]


def finetune_config(student_folder: Path, steps: int, out_dir: Path, config: Path | None = None) -> DistillConfig:
    """The distillation config of the student's own run (its config.yaml beside the folder) or `config`, cut to
    one phase of `steps` at its last phase's lr, reusing the run's AD-target bank."""
    run = Path(student_folder).resolve().parent
    source = config or (run / "config.yaml" if (run / "config.yaml").is_file() else None)
    cfg = load_config(DistillConfig, source)
    if cfg.distill.target_weight <= 0:
        raise UserError("the recovery fine-tune trains on AD targets: distill.target_weight must be > 0")
    last = cfg.curriculum.joint_optimisation
    cfg.curriculum.style_alignment = PhaseConfig(steps=steps, batch_size=last.batch_size, lr=last.lr,
                                                 style_weight=0.0, content_weight=0.0)
    cfg.curriculum.content_refinement = PhaseConfig(steps=0, content_weight=None)
    cfg.curriculum.joint_optimisation = PhaseConfig(steps=0, content_weight=None)
    cfg.curriculum.warmup_steps = min(cfg.curriculum.warmup_steps, max(1, steps // 10))
    cfg.validation.every = max(1, steps)
    if cfg.distill.target_path is None and (run / "ad-targets.safetensors").is_file():
        cfg.distill.target_path = str(run / "ad-targets.safetensors")
    if cfg.validation.fid_features_path is None and (run / "fid-domain").is_dir():
        cfg.validation.fid_features_path = str(run / "fid-domain")  # the run's own FID-domain network: comparable
    cfg.train.out_dir = str(out_dir)
    return cfg


def check_finetune_folder(run: Path, pruning: dict) -> None:
    """A fine-tune folder left by an earlier `prune --out` resumes only for the same pruning (its PRUNING file):
    another pruning's checkpoints hold other widths, and their weights would not be this student's."""
    recorded = run / PRUNING
    if recorded.is_file() and json.loads(recorded.read_text()) != pruning:
        raise UserError(f"{run} is the fine-tune of another pruning ({recorded.read_text().strip()}); "
                        "delete it to fine-tune this one, or choose another --out")


def prune(student_folder: str | Path, keep: float, out: str | Path, criterion: str = "entropy",
          finetune_steps: int = 0, config: Path | None = None, attention_blocks: int | None = None) -> Path:
    """Prune, compact (and fine-tune) the student at `student_folder`, keeping `attention_blocks` of its transformer
    blocks (None: all); returns the saved compacted student."""
    check_keep_rate(keep)
    checks.one_of("--criterion", criterion, ("entropy", "magnitude"))
    checks.within("--finetune-steps", finetune_steps, 0)
    if attention_blocks is not None:
        checks.within("--attention-blocks", attention_blocks, 1)  # its upper bound needs the student
    out = Path(out)
    checks.replaceable_folder("--out", out, "config.json")
    run = out.with_name(f"{out.name}-finetune")
    pruning = {"student": str(Path(student_folder).resolve()), "keep": keep, "criterion": criterion,
               "attention_blocks": attention_blocks}
    student = load_student(student_folder)
    if finetune_steps:  # what the fine-tune needs is checked before any pruning work
        check_finetune_folder(run, pruning)
        cfg = finetune_config(Path(student_folder), finetune_steps, run, config)
        try:
            teacher_folder(cfg.train.teacher)
        except UserError as error:
            raise UserError(f"{error}; the recovery fine-tune needs the teacher the student was distilled from "
                            "(--finetune-steps 0 prunes without it)") from None
    small = prune_student(student, keep, scoring_batches(student), criterion, attention_blocks)
    log.info("pruned to keep %.2f (%s), transformer blocks %s: %d -> %d parameters", keep, criterion,
             ", ".join(transformer_blocks(small)),
             sum(p.numel() for p in student.parameters()), sum(p.numel() for p in small.parameters()))
    if finetune_steps:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / PRUNING, json.dumps(pruning))
        small = load_student(distill(cfg, init=small))
    return save_pruned(small, out)
