"""Record what chosen attention layers of a diffusers UNet compute: per-head Q, K, V, outputs, maps.

Attention distillation supervises with the queries, keys, values and outputs of the teacher's
self-attention layers, so they must be read out with their autograd graph intact. We use diffusers'
own extension point, the attention processor: `AttentionCapture` installs a recording processor on
the chosen `Attention` modules for the length of a `with` block and puts the original processors back
afterwards, also when the block raises.

    with AttentionCapture(unet, layers="last6") as cap:
        unet(latent, t, encoder_hidden_states=text).sample
        q = cap.records["up_blocks.3.attentions.2.transformer_blocks.0.attn1"]["q"]  # (B, heads, N, d)

Processors are set per module (`Attention.set_processor`) rather than through
`unet.set_attn_processor`, so the same code captures any model built from diffusers `Attention`
modules (UNet2DConditionModel, UNet2DModel, our students).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from muon_ad.errors import UserError

RECORDABLE = ("q", "k", "v", "out")
MapsMode = Literal[False, "mean", "full"]
LayerSpec = str | int | Iterable[int | str] | None

# UNet2DConditionModel registers up_blocks before mid_block, so module order is not data-flow order.
_STAGE = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def self_attention_layer_names(unet: nn.Module) -> list[str]:
    """Names of the self-attention modules (no encoder_hidden_states) in data-flow order: down, mid, up.

    SD-1.5 has 16: 6 in down_blocks, 1 in mid_block, 9 in up_blocks (`...transformer_blocks.0.attn1`).
    """
    names = [n for n, m in unet.named_modules() if isinstance(m, Attention) and not m.is_cross_attention]
    return sorted(names, key=lambda n: _STAGE.get(n.split(".")[0], 1))  # stable: keeps order within a stage


def resolve_layers(unet: nn.Module, layers: LayerSpec = None) -> list[str]:
    """Turn a layer choice into module names.

    `None` or "all": every self-attention layer. "lastN" (e.g. "last6", the published AD choice): the
    last N self-attention layers. An int (negative allowed) indexes `self_attention_layer_names`; a str
    names any `Attention` module, self or cross. An iterable mixes ints and names, e.g. `range(-6, 0)`.
    """
    self_names = self_attention_layer_names(unet)
    if layers is None or layers == "all":
        return self_names
    if isinstance(layers, str) and (last := re.fullmatch(r"last(\d+)", layers)):
        n = int(last[1])
        if not 0 < n <= len(self_names):
            raise UserError(f"layers={layers!r}: the model has {len(self_names)} self-attention layers")
        return self_names[-n:]
    if isinstance(layers, (str, int)):
        layers = [layers]
    attention = {n for n, m in unet.named_modules() if isinstance(m, Attention)}
    names = []
    for layer in layers:
        if isinstance(layer, int):
            if not -len(self_names) <= layer < len(self_names):
                raise UserError(f"self-attention layer {layer} is out of range: the model has {len(self_names)}")
            names.append(self_names[layer])
        elif layer in attention:
            names.append(layer)
        else:
            raise UserError(f"{layer!r} is not an attention module; self-attention layers: {', '.join(self_names)}")
    return list(dict.fromkeys(names))


def _probs(q: Tensor, k: Tensor, scale: float, mask: Tensor | None) -> Tensor:
    logits = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:  # same convention as SDPA: bool = may attend, float = additive bias
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return logits.softmax(dim=-1)


def _head_mean_probs(q: Tensor, k: Tensor, scale: float, mask: Tensor | None) -> Tensor:
    return _probs(q, k, scale, mask).mean(dim=1)


def attention_probs(
    q: Tensor, k: Tensor, scale: float | None = None, mask: Tensor | None = None, *, mean_heads: bool = False,
    chunk: int = 1024,
) -> Tensor:
    """softmax(Q K^T * scale + mask) from (B, heads, Nq, d) and (B, heads, Nk, d).

    Returns (B, heads, Nq, Nk), or (B, Nq, Nk) with `mean_heads`. Memory in fp32 per sample and layer,
    for SD-1.5's 64x64-latent layers (8 heads, 4096 tokens):
    - full: heads*Nq*Nk*4 B = 512 MiB (32 MiB at 32x32, 2 MiB at 16x16);
    - mean: Nq*Nk*4 B = 64 MiB kept (4 MiB at 32x32), plus heads*chunk*Nk*4 B = 128 MiB transient
      (chunk 1024). With autograd on, each chunk is checkpointed: backward recomputes its per-head
      probabilities instead of keeping all of them.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not mean_heads:
        return _probs(q, k, scale, mask)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    parts = []
    for start in range(0, q.shape[-2], chunk):
        rows = slice(start, start + chunk)
        per_row = mask is not None and mask.dim() > 1 and mask.shape[-2] > 1  # else it broadcasts over queries
        mask_rows = mask[..., rows, :] if per_row else mask
        args = (q[..., rows, :], k, scale, mask_rows)
        parts.append(checkpoint(_head_mean_probs, *args, use_reentrant=False) if grad else _head_mean_probs(*args))
    return torch.cat(parts, dim=-2)


class RecordingAttnProcessor:
    """Computes what diffusers' `AttnProcessor2_0` computes and hands the per-head tensors to a capture.

    The steps mirror AttnProcessor2_0 one for one: Q/K/V only exist inside a processor, and matching it
    exactly keeps the UNet output bit-identical with and without capture.
    """

    def __init__(self, capture: AttentionCapture, name: str):
        self.capture, self.name = capture, name

    def __call__(
        self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None, temb: Tensor | None = None,
    ) -> Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=attn.scale)
        self.capture._store(self.name, query, key, value, out, attn.scale, attention_mask)

        hidden_states = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionCapture:
    """Context manager that records attention tensors of chosen layers during each UNet forward.

    `records` maps layer name -> {"q", "k", "v", "out": (B, heads, tokens, head_dim), "maps": see
    `attention_probs`}, for the most recent forward pass only. Tensors keep their autograd graph (run
    under `torch.no_grad()` for constant targets such as reference K/V). Each forward of `unet` starts a
    fresh dict, so `ref = cap.records` stays valid after the next pass; `clear()` drops the records.

    Args:
        unet: any module containing diffusers `Attention` modules.
        layers: see `resolve_layers` (default: all self-attention layers).
        record: which of "q", "k", "v", "out" to keep; () keeps none (capture then costs ~nothing).
        maps: False (none), "mean" (head-averaged, query-chunked) or "full" (per head).
        chunk: queries per chunk for `maps="mean"`.
    """

    def __init__(
        self, unet: nn.Module, layers: LayerSpec = None, record: Iterable[str] = RECORDABLE,
        maps: MapsMode = False, chunk: int = 1024,
    ):
        self.record = tuple(record)
        if unknown := set(self.record) - set(RECORDABLE):
            raise ValueError(f"record={self.record}: unknown {sorted(unknown)}; choose from {RECORDABLE}")
        if maps not in (False, "mean", "full"):
            raise ValueError(f"maps={maps!r}: choose False, 'mean' or 'full'")
        self.unet, self.maps, self.chunk = unet, maps, chunk
        self.layers = resolve_layers(unet, layers)
        self.records: dict[str, dict[str, Tensor]] = {}
        self._originals: dict[str, object] = {}
        self._hook = None

    def clear(self) -> None:
        self.records = {}

    def _store(self, name: str, q: Tensor, k: Tensor, v: Tensor, out: Tensor, scale: float, mask: Tensor | None):
        tensors = dict(q=q, k=k, v=v, out=out)
        record = {key: tensors[key] for key in self.record}
        if self.maps:
            record["maps"] = attention_probs(q, k, scale, mask, mean_heads=self.maps == "mean", chunk=self.chunk)
        self.records[name] = record

    def __enter__(self) -> AttentionCapture:
        modules = dict(self.unet.named_modules())
        try:
            for name in self.layers:
                self._originals[name] = modules[name].processor
                modules[name].set_processor(RecordingAttnProcessor(self, name))
            self._hook = self.unet.register_forward_pre_hook(lambda module, args: self.clear())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        modules = dict(self.unet.named_modules())
        for name, processor in self._originals.items():
            modules[name].set_processor(processor)
        self._originals.clear()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
