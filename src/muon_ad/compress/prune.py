"""Structured pruning of the stylisation student with torch-pruning's DepGraph, and physical compaction.

    student = prune_student(student, keep_rate=0.5, batches=pairs)      # a smaller Student, same interface
    save_pruned(student, "runs/pruned/student"); load_pruned("runs/pruned/student")

Steps (each a plain function, so the distillation hook reuses them):
1. `plan_pruning`: torch-pruning's `MetaPruner` (local ranking, every coupled group cut by the same ratio, so
   two criteria at one keep rate give the same widths and FLOPs) ranks the channels of each dependency group
   (convs, GroupNorm groups, residual sums, skip concatenations, attention heads) by an importance:
   "entropy" (head focus + gradient-sensitivity EMA, `compress.importance`) or "magnitude" (L2 baseline).
   Attention loses whole heads, round((1 − keep)·heads) per layer; GroupNorm groups lose the same count each
   (torch-pruning's channel groups; `round_to` is not used: it rounds inside groups and silently leaves the
   narrow levels unpruned). The plan is a list of (module, out|in, indices) roots, in original coordinates.
2. `plan_masks`: the plan as `ChannelMasks` on the full-width student (masked = compacted, exactly).
3. `compact`: a copy with the planned channels removed by torch-pruning, and the two attributes it does not
   know about fixed: `Attention.heads`, and the `.channels` diffusers' `Upsample2D`/`Downsample2D` assert on.
Optionally, before these (`attention_blocks`), whole transformer blocks go (`drop_transformers`): the least
important by `block_importance` (the same two criteria, at block level), each leaving its block's ResNet output
as it was. The int8 edge graph is many small nodes, and a transformer block is 92 of its 586 ONNX nodes (what
each removed block saves, and costs: `EDGE_ATTENTION_BLOCKS`).
Saving: `save_student` writes the compacted tensors (safetensors) and `widths.json` (per-layer widths); loading
rebuilds the architecture from the widths and loads the tensors. torch-pruning's own saving pickles the
module: not used.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_pruning as tp
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, Upsample2D
from torch import Tensor, nn

from muon_ad.checks import one_of
from muon_ad.compress.importance import CriterionImportance, SensitivityEMA, head_focus, magnitude_importance
from muon_ad.compress.masks import ChannelMasks, remove_norm_hooks
from muon_ad.errors import UserError
from muon_ad.models.student import Student, StudentBlock, layer_widths, load_student, save_student


# The edge path's pruning (bench prune, bench quant, bench realtime, the demo's edge stage): half the channels and
# heads, two transformer blocks of the CPU preset's three. `bench prune` (same base student, 200-step recovery
# fine-tune, 16 held-out pairs; style FID-domain before 52.1) with all three blocks kept: 49.8, style strength 0.28;
# two: 51.2, 0.25 (magnitude 55.4); one: 57.0, 0.12 (magnitude 55.3), so two. The int8 edge graph at 256 / 512 px,
# 2 threads (`muon-ad profile` of the three exports, 60 frames; the README's "Edge deployment"): 11.3 / 41.1 ms
# with three blocks, 9.9 / 36.6 with two, 8.5 / 31.0 with one.
# The recovery fine-tune after compaction (`recipes.compress.prune`): straight out of compaction every pruned student
# is near the identity map. Scored on 128 held-out pairs (before 36.3 style FID-domain, identity 46.5), 200 steps left
# it at 40.9 (+12.6 %, style strength 0.28 -> 0.15); 600 steps 35.4 (-2.5 %, 0.30), 1200 steps 35.3: so 600 (~30 s).
# Why not fewer channels: keep 0.4 / 0.35 (two blocks, 200 steps) ran the int8 edge graph 12 / 19 % faster at 256 px
# but cost +21 % style FID-domain on 16 pairs (+6 % at 0.5 on the same pairs; keep 0.4 on 64 pairs: +25 %) and two
# thirds of the style strength.
EDGE_KEEP, EDGE_ATTENTION_BLOCKS, EDGE_FINETUNE_STEPS = 0.5, 2, 600


@dataclass(frozen=True)
class PruneRoot:
    """One dependency group to cut: `module`'s out- or in-channels at `idxs` (torch-pruning finds the rest)."""

    module: str
    direction: str  # "out" | "in"
    idxs: tuple[int, ...]


def check_keep_rate(keep_rate: float) -> None:
    if not 0.0 < keep_rate <= 1.0:
        raise UserError(f"keep rate must be in (0, 1], got {keep_rate}")


def transformer_blocks(student: Student) -> list[str]:
    """The student's blocks that have a transformer, by name, in data-flow order."""
    return [name for name, m in student.named_modules() if isinstance(m, StudentBlock) and m.transformer is not None]


def check_attention_blocks(student: Student, keep: int | None) -> None:
    blocks = len(transformer_blocks(student))
    if keep is not None and not 1 <= keep <= blocks:
        raise UserError(f"--attention-blocks must be in 1..{blocks} (the student's transformer blocks), got {keep}")


@torch.no_grad()
def block_importance(student: Student, criterion: str,
                     scores: tuple[dict[str, Tensor], dict[str, Tensor]] = ({}, {})) -> dict[str, float]:
    """How much each transformer block matters, by block name. "entropy": the summed gradient sensitivity of its
    weights (first-order loss change when they are removed) times the mean focus of its attention heads, the
    channel criterion at block level; "magnitude": the L2 norm of its weights (the data-free baseline)."""
    sensitivity, focus = scores
    importance = {}
    for name in transformer_blocks(student):
        params = {f"{name}.transformer.{key}": p for key, p in student.get_submodule(name).transformer.named_parameters()}
        if criterion == "magnitude":
            importance[name] = float(sum(p.float().pow(2).sum() for p in params.values()).sqrt())
        else:
            heads = [f.mean() for layer, f in focus.items() if layer.startswith(f"{name}.transformer.")]
            mean_focus = float(torch.stack(heads).mean()) if heads else 1.0
            importance[name] = mean_focus * float(sum(sensitivity[key].sum() for key in params if key in sensitivity))
    return importance


def drop_transformers(student: Student, keep: int, criterion: str,
                      scores: tuple[dict[str, Tensor], dict[str, Tensor]] = ({}, {})) -> list[str]:
    """Remove, in place, all but the `keep` most important transformer blocks (`block_importance`); returns the
    names of the blocks that lost theirs."""
    check_attention_blocks(student, keep)
    importance = block_importance(student, criterion, scores)
    dropped = sorted(importance, key=importance.get)[: len(importance) - keep]
    for name in dropped:
        student.get_submodule(name).transformer = None
    return dropped


def _example_inputs(student: Student) -> tuple[Tensor, Tensor]:
    cfg = student.config
    device = next(student.parameters()).device
    return (torch.zeros(1, 3, 2 * cfg.downsampling, 2 * cfg.downsampling, device=device),
            torch.zeros(1, 3, cfg.style_size or cfg.downsampling, cfg.style_size or cfg.downsampling, device=device))


def _call(model: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
    return model(*inputs)


def _clean_copy(student: Student) -> Student:
    """A copy without mask hooks (torch-pruning traces plain modules), in eval mode."""
    clone = copy.deepcopy(student)
    remove_norm_hooks(clone)
    return clone.eval()


def importance_for(student: Student, criterion: str, batches: Iterable[tuple[Tensor, ...]] | None,
                   sensitivity: dict[str, Tensor] | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(sensitivity scores, head focus) of the entropy criterion on `batches` ({} and {} for magnitude).
    `sensitivity`: an EMA already accumulated elsewhere (the distillation hook's), else one over `batches`."""
    one_of("pruning criterion", criterion, ("entropy", "magnitude"))
    if criterion == "magnitude":
        return {}, {}
    batches = list(batches or [])
    if not batches:
        raise UserError("the entropy criterion needs (content, style) batches to score heads and channels on")
    if sensitivity is None:
        sensitivity = SensitivityEMA(student).accumulate(batches).scores
    return sensitivity, head_focus(student, batches)


def plan_pruning(student: Student, keep_rate: float, criterion: str = "entropy",
                 scores: tuple[dict[str, Tensor], dict[str, Tensor]] = ({}, {})) -> list[PruneRoot]:
    """The groups to cut for `keep_rate` (fraction of channels and heads kept), ranked by `criterion`."""
    check_keep_rate(keep_rate)
    if keep_rate == 1.0:
        return []
    model = _clean_copy(student)
    sensitivity, focus = scores
    importance = (magnitude_importance() if criterion == "magnitude"
                  else CriterionImportance(model, sensitivity, focus))
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    num_heads = {getattr(m, part): m.heads for m in attentions for part in ("to_q", "to_k", "to_v")}
    heads = min((m.heads for m in attentions), default=1)
    heads_cut = min(heads - 1, round((1.0 - keep_rate) * heads))  # every layer keeps one head at least
    pruner = tp.pruner.MetaPruner(
        model, _example_inputs(model), importance=importance, pruning_ratio=1.0 - keep_rate,
        # the output layer's channels are the image (pixel-shuffled or not); a statistics style encoder runs once per
        # style, off the per-frame path, and its statistics are concatenated per channel: it keeps its widths
        ignored_layers=[model.output_layer, *(model.style_encoder.modules() if model.style_encoder.statistics else ())],
        # A scale-shift ResNet's style projection gives (scale | shift) for its GroupNorm's channels: both halves carry
        # the norm's groups, so it has twice as many (else the cut channels need not split evenly over the groups).
        out_channel_groups={m.resnet.time_emb_proj: 2 * m.resnet.norm2.num_groups
                            for m in model.modules() if isinstance(m, StudentBlock) and m.adain},
        num_heads=num_heads, prune_num_heads=heads_cut > 0, prune_head_dims=False,
        head_pruning_ratio=heads_cut / heads, forward_fn=_call,
    )
    names = {m: name for name, m in model.named_modules()}
    roots = []
    for group in pruner.step(interactive=True):
        item = group[0]
        direction = "out" if pruner.DG.is_out_channel_pruning_fn(item.dep.handler) else "in"
        roots.append(PruneRoot(names[item.dep.target.module], direction, tuple(int(i) for i in item.idxs)))
    return roots


def _groups(model: Student, plan: list[PruneRoot]):
    """torch-pruning groups of `plan` on `model` (which must have the full widths the plan was made on)."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=_example_inputs(model), forward_fn=_call)
    modules = dict(model.named_modules())
    for root in plan:
        module = modules[root.module]
        pruner = graph.get_pruner_of_module(module)
        fn = pruner.prune_out_channels if root.direction == "out" else pruner.prune_in_channels
        yield graph, graph.get_pruning_group(module, fn, list(root.idxs))


def plan_masks(student: Student, plan: list[PruneRoot]) -> ChannelMasks:
    """`plan` as masks on the full-width `student` (parameter and norm names are the student's)."""
    model = _clean_copy(student)
    names = {m: name for name, m in model.named_modules()}
    masks = ChannelMasks()
    for graph, group in _groups(model, plan):
        for dep, idxs in group:
            layer = dep.target.module
            if layer not in names or not idxs:
                continue
            name, out = names[layer], graph.is_out_channel_pruning_fn(dep.handler)
            if isinstance(layer, (nn.GroupNorm, nn.LayerNorm)):
                masks.drop_norm_channels(name, layer.weight.shape[0], idxs)
                for attr in ("weight", "bias"):
                    if getattr(layer, attr, None) is not None:
                        masks.add(f"{name}.{attr}", getattr(layer, attr).shape, 0, idxs)
            elif isinstance(layer, (nn.Conv2d, nn.Linear)):
                masks.add(f"{name}.weight", layer.weight.shape, 0 if out else 1, idxs)
                if out and layer.bias is not None:
                    masks.add(f"{name}.bias", layer.bias.shape, 0, idxs)
    return masks


def compact(student: Student, plan: list[PruneRoot]) -> Student:
    """A copy of `student` with the planned channels and heads physically removed (same outputs as the student
    masked by `plan_masks(student, plan)`)."""
    model = _clean_copy(student)
    head_dims = {m: m.to_q.out_features // m.heads for m in model.modules() if isinstance(m, Attention)}
    for _, group in _groups(model, plan):
        group.prune()
    for m in model.modules():
        if isinstance(m, Attention):  # the processor splits q/k/v by `heads`: torch-pruning leaves it stale
            m.heads = m.to_q.out_features // head_dims[m]
            m.inner_dim = m.to_q.out_features
        elif isinstance(m, (Downsample2D, Upsample2D)):  # both assert on `.channels`, which torch-pruning leaves
            m.channels = m.conv.in_channels
    model.widths = layer_widths(model)
    return model


def prune_student(student: Student, keep_rate: float, batches: Iterable[tuple[Tensor, ...]] | None,
                  criterion: str = "entropy", attention_blocks: int | None = None) -> Student:
    """A compacted copy of `student` keeping `keep_rate` of its channels and heads, ranked by `criterion`
    ("entropy": head focus + gradient sensitivity on `batches` of (content, style[, AD target]) tensors;
    "magnitude": L2 of the weights, `batches` unused), and (`attention_blocks`) only that many of its transformer
    blocks, the rest removed first. The input student is left unchanged."""
    check_keep_rate(keep_rate)
    check_attention_blocks(student, attention_blocks)
    work = copy.deepcopy(student)
    batches = list(batches or [])
    if attention_blocks is not None:
        drop_transformers(work, attention_blocks, criterion, importance_for(work, criterion, batches))
    plan = plan_pruning(work, keep_rate, criterion, importance_for(work, criterion, batches))
    return compact(work, plan).eval()


def save_pruned(student: Student, folder: str | Path) -> Path:
    """A compacted student folder: config.json, model.safetensors, widths.json, checksums.json (no pickle)."""
    if student.widths is None:
        student.widths = layer_widths(student)
    return save_student(student, folder)


load_pruned = load_student  # the one loader reads plain and compacted folders (widths.json when present)
