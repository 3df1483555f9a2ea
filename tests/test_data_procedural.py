import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from muon_ad.data.procedural import (
    PALETTES,
    PHOTO_KINDS,
    SCENE_KINDS,
    TEXTURE_FAMILIES,
    ProceduralPhotos,
    ProceduralScenes,
    ProceduralTextures,
    make_photo,
    make_scene,
    make_texture,
    texture_caption,
)
from muon_ad.errors import UserError

# Hard-edged family -> (fewest, most) distinct colours without anti-aliasing (above 128 px). Plaid's
# extra colours are the woven mixes of pairs of palette colours.
FLAT = {"stripes": (2, 3), "checks": (2, 2), "dots": (2, 2), "waves": (2, 3), "cells": (3, 4), "rings": (2, 3),
        "zigzag": (2, 3), "bricks": (3, 3), "hexagons": (4, 4), "plaid": (3, 10)}


def test_registry():
    assert len(TEXTURE_FAMILIES) >= 10 and len(set(TEXTURE_FAMILIES)) == len(TEXTURE_FAMILIES)
    assert len(PALETTES) >= 8 and all(len(c) >= 2 for c in PALETTES.values())
    assert set(FLAT) | {"noise", "gradient"} == set(TEXTURE_FAMILIES)


@pytest.mark.parametrize("family", TEXTURE_FAMILIES)
def test_texture_deterministic_per_seed_and_structured(family):
    a = make_texture(family, "blue_orange", 33, np.random.default_rng(1))
    assert a.shape == (33, 33, 3) and a.dtype == np.uint8
    assert np.array_equal(a, make_texture(family, "blue_orange", 33, np.random.default_rng(1)))
    assert not np.array_equal(a, make_texture(family, "blue_orange", 33, np.random.default_rng(2)))

    # At 160 px (no supersampling) the hard-edged families are a few flat colours, the smooth ones are not.
    big = make_texture(family, "teal_coral", 160, np.random.default_rng(3))
    colours = len(np.unique(big.reshape(-1, 3), axis=0))
    if family in FLAT:
        assert FLAT[family][0] <= colours <= FLAT[family][1]
    else:
        assert colours > 20
    if family in ("noise", "gradient"):  # smooth: neighbouring pixels barely differ
        assert np.abs(np.diff(big.astype(int), axis=1)).mean() < 4


def test_texture_colours_come_from_palette():
    img = make_texture("checks", "red_white", 160, np.random.default_rng(0))
    palette = {tuple(c) for c in PALETTES["red_white"]}
    assert {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0)} <= palette


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="stripes"):
        make_texture("nope", "blue_orange", 32, np.random.default_rng(0))
    with pytest.raises(UserError, match="palette"):
        make_texture("stripes", "nope", 32, np.random.default_rng(0))
    with pytest.raises(UserError):
        ProceduralTextures(4, families=["stripes", "nope"])


def test_scene_has_outlined_objects_and_caption():
    img, caption = make_scene(48, np.random.default_rng(0))
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    again, caption2 = make_scene(48, np.random.default_rng(0))
    assert np.array_equal(img, again) and caption == caption2
    assert any(s in caption for s in ("circle", "square", "triangle", "house", "tree"))
    for kind in SCENE_KINDS:
        img, caption = make_scene(64, np.random.default_rng(5), kind)
        edges = np.abs(np.diff(img.astype(int), axis=0)).sum(-1) > 120  # strong edges: outlines
        assert edges.mean() > 0.01, kind
        assert ("sky" in caption) == (kind == "landscape")


def test_texture_dataset_contract():
    ds = ProceduralTextures(30, size=33, seed=7)
    item = ds[13]
    assert set(item) == {"image", "caption", "label", "path"} and item["path"] == ""
    assert item["image"].shape == (3, 33, 33) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    family = ds.class_names[item["label"]]
    assert item["caption"].endswith(family) and item["label"] == 13 % len(TEXTURE_FAMILIES)
    palette_words = item["caption"][: -len(family) - 1]
    assert palette_words in {texture_caption("x", p)[:-2] for p in PALETTES}
    # Item i depends on (seed, i) only: not on count, order of access, or other items.
    assert torch.equal(item["image"], ProceduralTextures(14, size=33, seed=7)[13]["image"])
    assert not torch.equal(item["image"], ProceduralTextures(30, size=33, seed=8)[13]["image"])
    with pytest.raises(IndexError):
        ds[30]


def test_texture_family_subset_keeps_global_labels():
    ds = ProceduralTextures(4, size=32, families=["rings", "plaid"])
    assert [ds[i]["label"] for i in range(4)] == [TEXTURE_FAMILIES.index(f) for f in ("rings", "plaid") * 2]


def test_scenes_dataset_collates():
    ds = ProceduralScenes(6, size=32, seed=1)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and len(batch["caption"]) == 3
    assert batch["label"].tolist() == [0, 1, 2] and ds.class_names == list(SCENE_KINDS)
    assert torch.equal(ds[4]["image"], ProceduralScenes(6, size=32, seed=1)[4]["image"])


def test_photos_come_in_equal_grey_muted_colour_shares_and_are_seeded():
    photos = ProceduralPhotos(30, 32, seed=0)
    items = [photos[i] for i in range(30)]
    images = [((it["image"] + 1) * 127.5).round().to(torch.int64) for it in items]
    spread = [int((im.amax(0) - im.amin(0)).max()) for im in images]  # max over pixels of max(R,G,B) - min(R,G,B)
    kinds = [PHOTO_KINDS[it["label"]] for it in items]
    assert [kinds.count(k) for k in PHOTO_KINDS] == [10, 10, 10]
    assert all(s == 0 for s, k in zip(spread, kinds) if k == "grey")  # exactly grey: R = G = B everywhere
    # Muted: saturation <= 0.15, so the channel spread <= 0.15 * 255 times the shading's 1.15, plus rounding.
    assert all(s <= 45 for s, k in zip(spread, kinds) if k == "muted")
    assert sum(s > 45 for s, k in zip(spread, kinds) if k == "colour") >= 3
    assert all(it["caption"] == f"a {k} photo" for it, k in zip(items, kinds))
    assert torch.equal(photos[7]["image"], ProceduralPhotos(30, 32, seed=0)[7]["image"])
    assert not torch.equal(photos[7]["image"], ProceduralPhotos(30, 32, seed=1)[7]["image"])
    lightness = torch.stack([im.float().mean() for im in images])
    assert lightness.min() < 80 and lightness.max() > 170  # dark and light photos both
    with pytest.raises(UserError, match="grey"):
        make_photo(32, np.random.default_rng(0), "sepia")


def test_teacher_training_data_reads_no_file(monkeypatch):
    """The built-in teacher's images are all generated: building its bank opens no file (tests/ fixtures included)."""
    import builtins

    import PIL.Image

    from muon_ad.recipes.train_teacher import TeacherDataConfig, build_bank

    opened = []
    real_open, real_image_open = builtins.open, PIL.Image.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    monkeypatch.setattr(PIL.Image, "open", lambda f, *a, **k: opened.append(str(f)) or real_image_open(f, *a, **k))
    bank = build_bank(TeacherDataConfig(textures=4, scenes=3, photos=3, size=16))
    assert len(bank.images) == 10 and "a grey photo" in bank.captions
    assert opened == []
