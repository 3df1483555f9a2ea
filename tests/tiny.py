"""Shared tiny model shapes for the tests: the smallest teacher that is still SD-1.5-shaped."""

from muon_ad.models.teacher import TinyTeacherConfig

TINY_TEACHER = TinyTeacherConfig(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32), attention_heads=2,
                                 text_dim=32, text_layers=1)
