"""Data: built-in procedural textures and scenes, and loaders for real image folders.

Every dataset yields dicts {"image": float (3, H, W) in [-1, 1], "caption": str, "label": int (-1: none),
"path": str ("" for procedural)}, so torch's default_collate batches any of them.
"""

from muon_ad.data.coco_stuff import COCOStuff
from muon_ad.data.folders import ImageFileDataset, ImageFolder, StyleFolder, TextureFolder, collate_usable, read_captions
from muon_ad.data.images import (
    BadImageError,
    SkipSummary,
    load_rgb,
    save_image_atomic,
    to_pil,
    to_tensor,
)
from muon_ad.data.procedural import (
    PALETTES,
    SCENE_KINDS,
    TEXTURE_FAMILIES,
    ProceduralScenes,
    ProceduralTextures,
    make_scene,
    make_texture,
    texture_caption,
)

__all__ = [
    "PALETTES", "SCENE_KINDS", "TEXTURE_FAMILIES", "BadImageError", "COCOStuff", "ImageFileDataset",
    "ImageFolder", "ProceduralScenes", "ProceduralTextures", "SkipSummary", "StyleFolder", "TextureFolder", "collate_usable",
    "load_rgb", "make_scene", "make_texture", "read_captions", "save_image_atomic", "texture_caption", "to_pil",
    "to_tensor",
]
