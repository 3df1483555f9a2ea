"""The compressed text-to-image student: the teacher's UNet with blocks removed, as BK-SDM does.

BK-SDM (Kim et al. 2023, "Architectural compression of text-to-image diffusion models") removes whole
blocks from SD's UNet and initialises the rest from the teacher:
- base: one fewer resnet + attention per stage (SD-1.5: down 2 → 1, up 3 → 2), the mid block kept;
- small: base, and no mid block;
- tiny: small, and no innermost stage (SD-1.5's attention-free 8×8 down and up blocks).
The student is a stock diffusers `UNet2DConditionModel` built from the edited config (`layers_per_block`,
`mid_block_type=None`, shorter block lists), so it saves, loads and samples as any SD UNet does.

A stage is never cut below one layer (a down stage's first resnet changes the width); a variant that would
remove nothing from a given teacher is refused.

Weights are copied by name, with one rename: an up stage's last resnet takes the skip connection from the
level above, so its input width differs from the resnets before it; the student's last up-layer therefore
takes the teacher's last one, and the layers before it the teacher's of the same index (by name alone, those
last layers would get a tensor of the wrong shape). With the innermost stage gone, student up-block i is
teacher up-block i + 1.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel

from muon_ad.errors import UserError

VARIANTS = ("base", "small", "tiny")
# Config keys that may hold one value per stage (down-block order); the tiny variant drops the innermost one.
_PER_STAGE = ("block_out_channels", "layers_per_block", "attention_head_dim", "num_attention_heads",
              "transformer_layers_per_block", "cross_attention_dim", "only_cross_attention")


@dataclass
class WeightCopy:
    """What `copy_teacher_weights` did: tensors copied, the student's total, and those left at their init."""

    copied: int
    total: int
    not_copied: list[str]


def student_config(teacher_config: dict, variant: str) -> dict:
    """The student UNet's diffusers config: the teacher's with BK-SDM's blocks of `variant` removed."""
    if variant not in VARIANTS:
        raise UserError(f"unknown student variant '{variant}'; choose from {', '.join(VARIANTS)}")
    config = {k: copy.deepcopy(v) for k, v in dict(teacher_config).items() if not k.startswith("_")}
    stages = len(config["down_block_types"])
    layers = config["layers_per_block"]
    per_stage = [layers] * stages if isinstance(layers, int) else list(layers)
    fewer = [max(1, n - 1) for n in per_stage]
    config["layers_per_block"] = fewer[0] if isinstance(layers, int) and len(set(fewer)) == 1 else fewer
    if variant in ("small", "tiny"):
        config["mid_block_type"] = None
    if variant == "tiny":
        if stages < 2:
            raise UserError("variant 'tiny' removes the innermost stage, but the teacher UNet has only one")
        for key in _PER_STAGE:
            if isinstance(config.get(key), (list, tuple)):
                config[key] = list(config[key])[:-1]
        config["down_block_types"] = list(config["down_block_types"])[:-1]
        config["up_block_types"] = list(config["up_block_types"])[1:]
    if _same_architecture(config, teacher_config):
        raise UserError(f"variant '{variant}' removes nothing from this teacher (it has 1 layer per stage"
                        f"{' and no mid block' if teacher_config.get('mid_block_type') is None else ''}); "
                        "choose small or tiny")
    return config


def _same_architecture(config: dict, teacher_config: dict) -> bool:
    keys = ("layers_per_block", "mid_block_type", "down_block_types")
    return all(_plain(config.get(k)) == _plain(teacher_config.get(k)) for k in keys)


def _plain(value: object) -> object:
    return list(value) if isinstance(value, (list, tuple)) else value


def _up_layers(config: dict) -> list[int]:
    """Layers per up stage, in up-block order (diffusers: the mirrored down stage's layers + 1)."""
    stages = len(config["down_block_types"])
    layers = config["layers_per_block"]
    per_stage = [layers] * stages if isinstance(layers, int) else list(layers)
    return [n + 1 for n in reversed(per_stage)]


def removed_stages(student: dict, teacher: dict) -> int:
    return len(teacher["down_block_types"]) - len(student["down_block_types"])


def teacher_name(name: str, student: dict, teacher: dict) -> str:
    """The teacher parameter (or module) a student parameter (or module) is copied from / paired with."""
    match = re.match(r"up_blocks\.(\d+)(\.(resnets|attentions)\.(\d+))?(.*)", name)
    if not match:
        return name  # conv_in, time embedding, down blocks, mid block, output: same place, same name
    block = int(match[1])
    source = block + removed_stages(student, teacher)
    if match[2] is None:
        return f"up_blocks.{source}{match[5]}"
    layer = int(match[4])
    if layer == _up_layers(student)[block] - 1:  # the last layer takes the skip from the level above
        layer = _up_layers(teacher)[source] - 1
    return f"up_blocks.{source}.{match[3]}.{layer}{match[5]}"


def build_student(teacher_unet: UNet2DConditionModel, variant: str) -> tuple[UNet2DConditionModel, WeightCopy]:
    """A student UNet of `variant`, its weights copied from `teacher_unet` (see the module docstring)."""
    config = student_config(teacher_unet.config, variant)
    student = UNet2DConditionModel.from_config(config).to(teacher_unet.device)
    if student.dtype != teacher_unet.dtype:
        student.to(dtype=teacher_unet.dtype)
    return student, copy_teacher_weights(student, teacher_unet)


@torch.no_grad()
def copy_teacher_weights(student: UNet2DConditionModel, teacher: UNet2DConditionModel) -> WeightCopy:
    """Copy each student tensor from its teacher counterpart (`teacher_name`); shapes must agree, else the
    tensor keeps its initialisation and is listed in `not_copied`."""
    source = teacher.state_dict()
    state = student.state_dict()
    not_copied = []
    for name, tensor in state.items():
        origin = source.get(teacher_name(name, student.config, teacher.config))
        if origin is None or origin.shape != tensor.shape:
            not_copied.append(name)
        else:
            tensor.copy_(origin)
    return WeightCopy(copied=len(state) - len(not_copied), total=len(state), not_copied=not_copied)


def paired_blocks(student: dict, teacher: dict) -> list[tuple[str, str]]:
    """(student block, teacher block) whose outputs have the same shape: the feature-distillation pairs.

    Up blocks and the mid block always match; a down block only where both down-sample or neither does (with
    the innermost stage removed, the student's new last down block keeps its resolution, the teacher's halves it).
    """
    pairs = []
    stages_s, stages_t = len(student["down_block_types"]), len(teacher["down_block_types"])
    for i in range(stages_s):
        if (i == stages_s - 1) == (i == stages_t - 1):
            pairs.append((f"down_blocks.{i}", f"down_blocks.{i}"))
    if student.get("mid_block_type", "UNetMidBlock2DCrossAttn") is not None:
        pairs.append(("mid_block", "mid_block"))
    pairs += [(f"up_blocks.{i}", teacher_name(f"up_blocks.{i}", student, teacher)) for i in range(stages_s)]
    return pairs


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
