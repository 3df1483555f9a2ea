"""Losses on captured attention: attention distillation (AD), content, attention-map KL, feature and
output distillation.

Records are `AttentionCapture.records` dicts: layer name -> {"q", "k", "v", "out": (B, heads, N, d),
"maps"}. Every reference, content and teacher side is a constant target (detached, or computed without
a graph): gradients reach only the image being optimised or the student.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Records = Mapping[str, Mapping[str, Tensor]]
Masks = tuple[Tensor, Tensor | Sequence[Tensor]]  # (image labels, reference labels, one map per reference)


def token_grid(tokens: int, aspect: float = 1.0) -> tuple[int, int]:
    """(height, width) of a flattened, row-major token grid with height/width ratio `aspect`."""
    height = max(1, round(math.sqrt(tokens * aspect)))
    if tokens % height:
        raise ValueError(f"{tokens} tokens do not form a grid with height/width {aspect:g}")
    return height, tokens // height


def _per_batch(t: Tensor, batch: int) -> Tensor:
    """A reference with batch 1 serves every image; otherwise image i uses reference i."""
    if t.shape[0] not in (1, batch):
        raise ValueError(f"reference batch {t.shape[0]} does not match image batch {batch} (use 1 or {batch})")
    return t.expand(batch, *t.shape[1:])


def _token_labels(labels: Tensor, tokens: int) -> Tensor:
    """Nearest-resize an integer label map (H, W) or (B, H, W) to a layer's token grid: (B or 1, tokens)."""
    labels = labels if labels.dim() == 3 else labels[None]
    size = token_grid(tokens, labels.shape[-2] / labels.shape[-1])
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest").flatten(1).long()


def _allowed_keys(masks: Masks, queries: int, ref_tokens: list[int]) -> Tensor:
    """(B or 1, Nq, Nk) bool: query i may attend reference token j iff both carry the same label >= 0."""
    image_labels, ref_labels = masks
    ref_labels = [ref_labels] if isinstance(ref_labels, Tensor) else list(ref_labels)
    if len(ref_labels) != len(ref_tokens):
        raise ValueError(f"{len(ref_labels)} reference label maps for {len(ref_tokens)} references")
    query = _token_labels(image_labels, queries)
    keys = [_token_labels(labels, n) for labels, n in zip(ref_labels, ref_tokens)]
    batch = max(t.shape[0] for t in (query, *keys))
    key = torch.cat([t.expand(batch, -1) for t in keys], dim=1)
    return (query[:, :, None] == key[:, None, :]) & (key[:, None, :] >= 0)


def _ad_layer(q: Tensor, out: Tensor, refs: list[Mapping[str, Tensor]], masks: Masks | None) -> Tensor:
    k = torch.cat([_per_batch(ref["k"], q.shape[0]) for ref in refs], dim=-2)
    v = torch.cat([_per_batch(ref["v"], q.shape[0]) for ref in refs], dim=-2)
    if masks is None:
        with torch.no_grad():
            target = F.scaled_dot_product_attention(q, k, v)
        return F.l1_loss(out, target)
    allowed = _allowed_keys(masks, q.shape[-2], [ref["k"].shape[-2] for ref in refs]).to(q.device)
    scored = allowed.any(dim=-1, keepdim=True)  # (B|1, Nq, 1): queries that get a loss
    with torch.no_grad():  # rows with no key attend everything, only to keep SDPA finite
        target = F.scaled_dot_product_attention(q, k, v, attn_mask=(allowed | ~scored)[:, None])
    weight = scored[:, None].to(out.dtype).expand_as(out)
    return (weight * (out - target).abs()).sum() / weight.sum().clamp_min(1)


def ad_loss(
    records: Records, ref_records: Records | Sequence[Records], layers: Iterable[str] | None = None,
    masks: Masks | None = None,
) -> Tensor:
    """Attention distillation: sum over layers of L1(out, SDPA(Q, K_ref, V_ref)), the target constant.

    The image's queries re-aggregate the reference's keys and values; pulling the image's attention
    output toward that transfers the reference's textures. `records` needs "q" and "out", each
    reference "k" and "v" (batch 1, shared, or one per image). Several references are concatenated
    along the token axis, so each query may draw from all of them.

    `masks` = (image labels, reference labels, one map per reference): integer maps at any resolution
    (H, W) or (B, H, W), nearest-resized to each layer's token grid (aspect taken from the map). A query
    attends only reference tokens with its own label; reference tokens labelled < 0 are never attended,
    and queries with no attendable token (label < 0, or absent from the references) get no loss.
    """
    refs = [ref_records] if isinstance(ref_records, Mapping) else list(ref_records)
    names = list(records if layers is None else layers)
    return torch.stack(
        [_ad_layer(records[n]["q"], records[n]["out"], [ref[n] for ref in refs], masks) for n in names]
    ).sum()


def content_loss(records: Records, content_records: Records, layers: Iterable[str] | None = None) -> Tensor:
    """Sum over layers of L1(Q, Q_content): the image keeps the content image's layout (AD weight 0.25)."""
    names = list(records if layers is None else layers)
    return torch.stack([F.l1_loss(records[n]["q"], content_records[n]["q"].detach()) for n in names]).sum()


def _resize_tokens(x: Tensor, tokens: int, aspect: float) -> Tensor:
    """Resize the last axis of x, a flattened token grid, to `tokens` (area down, bilinear up)."""
    height, width = token_grid(x.shape[-1], aspect)
    mode = "area" if tokens < x.shape[-1] else "bilinear"
    grid = x.reshape(-1, 1, height, width)
    return F.interpolate(grid, size=token_grid(tokens, aspect), mode=mode).reshape(*x.shape[:-1], tokens)


def resize_attention_maps(maps: Tensor, queries: int, keys: int, aspect: float = 1.0) -> Tensor:
    """Resize maps (..., Nq, Nk) on their 2-D token grids to (..., queries, keys); rows sum to 1 again."""
    if maps.shape[-1] != keys:
        maps = _resize_tokens(maps, keys, aspect)
    if maps.shape[-2] != queries:
        maps = _resize_tokens(maps.transpose(-1, -2), queries, aspect).transpose(-1, -2)
    return maps / maps.sum(dim=-1, keepdim=True)


def attention_kl(
    student_maps: Tensor, teacher_maps: Tensor, temperature: float = 1.0, head_mask: Tensor | None = None,
    aspect: float = 1.0,
) -> Tensor:
    """KL(teacher || student) between attention maps of one mapped layer pair, averaged over rows.

    Maps are probabilities, (B, Nq, Nk) head-averaged or (B, heads, Nq, Nk). A teacher at another
    resolution is resized to the student's token grids (`resize_attention_maps`, height/width
    `aspect`). With a temperature T both sides become softmax(log p / T) and the KL is scaled by T^2
    (Hinton et al.), keeping gradient sizes comparable across T. `head_mask` (heads,) weights the
    per-head KL of per-head maps, e.g. to skip pruned student heads.
    """
    dtype = torch.promote_types(student_maps.dtype, torch.float32)  # logs of fp16 probabilities underflow
    teacher = teacher_maps.detach().to(dtype)
    if teacher.shape[-2:] != student_maps.shape[-2:]:
        teacher = resize_attention_maps(teacher, *student_maps.shape[-2:], aspect=aspect)
    if teacher.shape != student_maps.shape:
        raise ValueError(f"student maps {tuple(student_maps.shape)} vs teacher {tuple(teacher.shape)}: "
                         "head counts differ, compare head-averaged maps (maps='mean')")
    log_s = torch.log_softmax(student_maps.to(dtype).clamp_min(1e-12).log() / temperature, dim=-1)
    log_t = torch.log_softmax(teacher.clamp_min(1e-12).log() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=-1)  # (B, [heads,] Nq)
    if head_mask is not None:
        if kl.dim() != 3:
            raise ValueError("head_mask needs per-head maps (maps='full')")
        per_head = kl.mean(dim=(0, 2))
        return (per_head * head_mask).sum() / head_mask.sum() * temperature**2
    return kl.mean() * temperature**2


def feature_distillation(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
    """Mean over layers of ||s - t||^2 / ||t||^2 per sample: each layer counts the same whatever its scale."""
    losses = []
    for s, t in zip(student_feats, teacher_feats, strict=True):
        t = t.detach()
        error = (s - t).pow(2).flatten(1).sum(1) / t.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        losses.append(error.mean())
    return torch.stack(losses).mean()


def output_distillation(student_out: Tensor, teacher_out: Tensor) -> Tensor:
    """MSE between student and teacher outputs (e.g. noise predictions), the teacher a constant target."""
    return F.mse_loss(student_out, teacher_out.detach())
