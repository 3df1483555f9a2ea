"""Attention capture from diffusers models, and the losses built on it (AD, content, KL, distillation)."""

from muon_ad.attention.capture import (
    AttentionCapture,
    RecordingAttnProcessor,
    attention_probs,
    resolve_layers,
    self_attention_layer_names,
)
from muon_ad.attention.losses import (
    ad_loss,
    attention_kl,
    content_loss,
    feature_distillation,
    output_distillation,
    resize_attention_maps,
    token_grid,
)

__all__ = [
    "AttentionCapture",
    "RecordingAttnProcessor",
    "ad_loss",
    "attention_kl",
    "attention_probs",
    "content_loss",
    "feature_distillation",
    "output_distillation",
    "resize_attention_maps",
    "resolve_layers",
    "self_attention_layer_names",
    "token_grid",
]
