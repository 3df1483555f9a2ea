"""Image I/O, folder datasets and COCO-Stuff on tiny folders built here, each with broken files in it."""

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from muon_ad.data.coco_stuff import COCOStuff, decode_segmentation, rle_counts
from muon_ad.data.folders import ImageFolder, StyleFolder, TextureFolder, collate_usable
from muon_ad.data.images import BadImageError, SkipSummary, load_rgb, save_image_atomic, to_pil, to_tensor
from muon_ad.errors import UserError

RED = (220, 30, 30)


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def write_zoo(folder, good=("a.png", "sub/b.jpg")):
    """Good RGB files plus one of each awkward kind. Returns {kind: file name}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    for name in good:
        Image.new("RGB", (40, 30), RED).save(folder / name)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    files = {
        "gray": "gray.png", "cmyk": "cmyk.jpg", "rgba": "rgba.png", "i16": "deep.png",
        "truncated": "truncated.jpg", "corrupt": "corrupt.jpg", "tiny": "tiny.png",
    }
    Image.new("L", (32, 32), 200).save(folder / files["gray"])
    Image.new("RGB", (32, 32), RED).convert("CMYK").save(folder / files["cmyk"])
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(folder / files["rgba"])  # transparent -> white
    Image.fromarray(np.full((32, 32), 32896, np.uint16)).save(folder / files["i16"])  # 16-bit 50% gray
    data = jpeg_bytes(noise)
    (folder / files["truncated"]).write_bytes(data[: len(data) // 2])
    (folder / files["corrupt"]).write_bytes(b"definitely not a jpeg" * 10)
    Image.new("RGB", (8, 8), RED).save(folder / files["tiny"])
    (folder / "notes.txt").write_text("not an image, not listed")
    (folder / ".hidden.png").write_bytes(b"half-written temp file")
    return files


# ----------------------------------------------------------------------------------------------- images


def test_load_rgb_converts_awkward_modes(tmp_path):
    files = write_zoo(tmp_path)
    expected = {"gray": (200, 200, 200), "cmyk": RED, "rgba": (255, 255, 255), "i16": (128, 128, 128)}
    for kind, colour in expected.items():
        img = load_rgb(tmp_path / files[kind])
        assert img.mode == "RGB", kind
        assert np.abs(np.asarray(img)[16, 16].astype(int) - colour).max() <= 3, kind
    rotated = Image.new("RGB", (40, 20), RED)
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: "rotate 90 degrees to display"
    rotated.save(tmp_path / "phone.jpg", exif=exif)
    assert load_rgb(tmp_path / "phone.jpg").size == (20, 40)


@pytest.mark.parametrize("kind, reason", [("truncated", "truncated"), ("corrupt", "unreadable"), ("tiny", "too small")])
def test_load_rgb_bad_files_are_one_line_user_errors(tmp_path, kind, reason):
    files = write_zoo(tmp_path)
    with pytest.raises(BadImageError) as e:
        load_rgb(tmp_path / files[kind])
    assert isinstance(e.value, UserError) and e.value.reason == reason and "\n" not in str(e.value)
    with pytest.raises(BadImageError, match="unreadable"):
        load_rgb(tmp_path / "missing.png")


def test_to_tensor_resizes_short_side_and_center_crops():
    img = np.zeros((40, 120, 3), np.uint8)
    img[:, 40:80] = 255  # only the centre square is white
    t = to_tensor(Image.fromarray(img), 33)
    assert t.shape == (3, 33, 33) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1 and t[:, :, 2:-2].mean() > 0.95  # bicubic may blur the borders only
    assert torch.equal(to_tensor(img[:, 40:80]), torch.ones(3, 40, 40))  # arrays keep their size
    assert torch.equal(to_tensor(Image.new("L", (5, 4), 255)), torch.ones(3, 4, 5))  # any PIL mode


def test_to_pil_accepts_project_tensors_and_arrays():
    t = torch.linspace(-1, 1, 3 * 4 * 5).reshape(1, 3, 4, 5)
    img = to_pil(t)
    assert img.size == (5, 4) and np.asarray(img)[0, 0, 0] == 0 and np.asarray(img)[-1, -1, -1] == 255
    assert np.array_equal(np.asarray(to_pil(np.asarray(img))), np.asarray(img))
    assert to_pil(np.zeros((4, 5), np.uint8)).mode == "L"
    assert to_pil(torch.zeros(3, 6, 3)).size == (3, 6)  # tensors are always channels-first
    with pytest.raises(ValueError):
        to_pil(torch.zeros(2, 3, 4, 4))


def test_save_image_atomic_round_trip_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "out" / "x.png"
    t = torch.rand(3, 9, 7) * 2 - 1
    save_image_atomic(t, path)
    assert torch.allclose(to_tensor(load_rgb(path, min_size=1)), t, atol=1 / 127.5 + 1e-6)
    before = path.read_bytes()

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        save_image_atomic(torch.zeros(3, 9, 7), path)
    assert path.read_bytes() == before and os.listdir(path.parent) == ["x.png"]  # old file intact, no temp left
    with pytest.raises(UserError):
        save_image_atomic(t, tmp_path / "x.unknown")


def test_skip_summary_counts_each_file_once():
    s = SkipSummary(5)
    s.mark_ok(0)
    s.mark_ok(1, converted=True)
    s.mark_bad(2, "truncated")
    s.mark_bad(2, "truncated")
    s.mark_bad(3, "too small")
    assert s.skipped == {"truncated": 1, "too small": 1} and s.converted == 1 and s.is_bad(3) and not s.is_bad(0)
    assert str(s) == "4 of 5 files read: skipped 2 (1 truncated, 1 too small), converted 1 to RGB"


# ---------------------------------------------------------------------------------------------- folders


def test_image_folder_skips_bad_files_and_matches_captions(tmp_path):
    files = write_zoo(tmp_path / "imgs")
    lines = [{"file": "./sub/b.jpg", "caption": "by relative path"}, {"image": "/x/gray.png", "text": "by name"}]
    (tmp_path / "caps.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = ImageFolder(tmp_path / "imgs", size=24, captions=tmp_path / "caps.jsonl")
    assert len(ds) == 9  # every image file, bad ones included: they are found when read
    read = [ds[i] for i in range(len(ds))]  # never raises
    bad = {files[k] for k in ("truncated", "corrupt", "tiny")}
    assert {os.path.basename(ds.paths[i]) for i, it in enumerate(read) if it is None} == bad  # exactly these skipped ...
    items = [it for it in read if it is not None]
    assert len({it["path"] for it in items}) == len(items) == 6  # ... and none is replaced by a repeat of another
    assert all(it["image"].shape == (3, 24, 24) and it["label"] == -1 for it in items)
    caption = {os.path.relpath(it["path"], tmp_path / "imgs"): it["caption"] for it in items}
    assert caption["sub/b.jpg"] == "by relative path" and caption["gray.png"] == "by name" and caption["a.png"] == ""
    assert ds.summary.skipped == {"unreadable": 1, "truncated": 1, "too small": 1}
    assert ds.summary.converted == 4  # gray, cmyk, rgba, 16-bit
    assert "skipped 3" in str(ds.summary)


def test_image_folder_csv_captions_and_workers_share_the_summary(tmp_path):
    write_zoo(tmp_path / "imgs")
    (tmp_path / "caps.csv").write_text('file,caption\na.png,"red, flat"\n')
    ds = ImageFolder(tmp_path / "imgs", size=16, captions=tmp_path / "caps.csv")
    batches = list(DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_usable))  # the worker: another process
    paths = [p for b in batches if b is not None for p in b["path"]]
    assert len(paths) == len(set(paths)) == len(ds) - 3 and "red, flat" in batches[0]["caption"]  # no duplicates
    assert sum(ds.summary.skipped.values()) == 3
    assert "skipped 3 (1 unreadable, 1 truncated, 1 too small)" in ds.report()


def test_image_folder_counts_captions_naming_no_file(tmp_path, caplog):
    write_zoo(tmp_path / "imgs")
    (tmp_path / "caps.jsonl").write_text('{"file": "a.png", "caption": "x"}\n{"file": "gone.png", "caption": "y"}\n')
    ds = ImageFolder(tmp_path / "imgs", size=16, captions=tmp_path / "caps.jsonl")
    assert ds.orphan_captions == ["gone.png"]
    assert "1 caption(s) name no file" in caplog.text and "gone.png" in caplog.text


def test_folder_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ImageFolder(tmp_path / "nope", size=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        ImageFolder(tmp_path / "empty", size=16)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(UserError, match="no usable image"):
        ImageFolder(tmp_path / "bad", size=16)[0]
    (tmp_path / "caps.jsonl").write_text('{"file": "x.jpg"}\n')
    with pytest.raises(UserError, match="caption"):
        ImageFolder(tmp_path / "bad", size=16, captions=tmp_path / "caps.jsonl")


@pytest.mark.parametrize("dtd_layout", [True, False])
def test_texture_folder(tmp_path, dtd_layout):
    root = tmp_path / "dtd"
    base = root / "images" if dtd_layout else root
    write_zoo(base / "striped", good=("striped_0001.jpg",))
    Image.new("RGB", (20, 20), RED).save((base / "banded").mkdir(parents=True) or base / "banded" / "banded_0001.jpg")
    (base / "empty_class").mkdir()
    ds = TextureFolder(root, size=16)
    assert ds.class_names == ["banded", "striped"]
    items = [it for i in range(len(ds)) if (it := ds[i]) is not None]
    assert [it["label"] for it in items][:2] == [0, 1]
    assert all(it["caption"] == ds.class_names[it["label"]] for it in items)
    assert sum(ds.summary.skipped.values()) == 3


def test_style_folder(tmp_path):
    for style, name in [("Impressionism", "claude-monet_water-lilies.jpg"), ("Abstract_Expressionism", "x.png")]:
        (tmp_path / style).mkdir()
        Image.new("RGB", (30, 20), RED).save(tmp_path / style / name)
    (tmp_path / "Impressionism" / "broken_file.jpg").write_bytes(b"junk")
    ds = StyleFolder(tmp_path, size=16)
    assert ds.class_names == ["Abstract_Expressionism", "Impressionism"]
    items = [it for i in range(len(ds)) if (it := ds[i]) is not None]
    assert items[0]["caption"] == "a painting in the style of abstract expressionism" and items[0]["label"] == 0
    monet = next(it for it in items if "monet" in it["path"])
    assert monet["caption"] == "a painting in the style of impressionism by claude monet" and monet["label"] == 1
    assert ds.summary.skipped == {"unreadable": 1}


# -------------------------------------------------------------------------------------------- COCO-Stuff


def rle_encode(runs):
    """COCO's compressed RLE string (port of pycocotools' rleToString), to test the decoder against."""
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(out)


def test_rle_and_polygon_decoding():
    runs = [3, 40, 1, 1000, 2, 5, 0, 7]  # later runs shorter than two before: negative deltas, sign extension
    assert rle_counts(rle_encode(runs)) == runs
    mask = np.zeros((4, 3), bool)
    mask[1:3, 0] = mask[1, 2] = True  # column-major runs: 1 zero, 2 ones, 6 zeros, 1 one, 2 zeros
    for counts in ([1, 2, 6, 1, 2], rle_encode([1, 2, 6, 1, 2])):
        assert np.array_equal(decode_segmentation({"size": [4, 3], "counts": counts}, 4, 3), mask)
    square = decode_segmentation([[2, 2, 6, 2, 6, 6, 2, 6]], 10, 10)
    assert 16 <= square.sum() <= 25 and square[4, 4] and not square[0, 0]


def make_coco(root, split="val2017"):
    images = root / "images" / split
    images.mkdir(parents=True)
    Image.new("RGB", (40, 30), RED).save(images / "000000000001.jpg")
    Image.new("L", (32, 32), 90).save(images / "000000000002.jpg")
    (images / "000000000003.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (64, 64)))[:200])
    (root / "annotations").mkdir()
    captions = {"images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
                "annotations": [{"image_id": 1, "id": 5, "caption": " A red wall. "},
                                {"image_id": 1, "id": 6, "caption": "second"}]}
    (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(captions))
    labels = np.full((30, 40), 255, np.uint8)
    labels[:, :20] = 104  # left half: category 105 ("wall-brick" style id) - 1
    return labels


def test_coco_stuff_png_maps_and_captions(tmp_path):
    labels = make_coco(tmp_path)
    maps = tmp_path / "stuffthingmaps_trainval2017" / "val2017"
    maps.mkdir(parents=True)
    Image.fromarray(labels).save(maps / "000000000001.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(maps / "000000000002.png")
    (maps / "000000000003.png").write_bytes(b"junk")

    ds = COCOStuff(tmp_path, "val2017", size=16)
    assert [ds[i]["caption"] for i in range(2)] == ["A red wall.", ""]
    assert ds[2] is None and sum(ds.summary.skipped.values()) == 1  # the broken file is skipped, not filled in

    ds = COCOStuff(tmp_path, "val2017", size=16, with_masks=True)
    item = ds[0]
    assert item["mask"].shape == (16, 16) and item["mask"].dtype == torch.long
    # 40x30 -> 21x16, centre crop from x=2: columns 0..7 were the left half of the original.
    assert (item["mask"][:, :7] == 104).all() and (item["mask"][:, 9:] == 255).all()
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["mask"].shape == (2, 16, 16) and batch["image"].shape == (2, 3, 16, 16)


def test_coco_stuff_json_annotations(tmp_path):
    labels = make_coco(tmp_path, "train2017")
    column_major = (labels == 104).T.reshape(-1).astype(int)
    change = np.flatnonzero(np.diff(column_major)) + 1
    runs = np.diff(np.concatenate([[0], change, [column_major.size]])).tolist()  # starts with ones: prepend 0
    stuff = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 30, "width": 40}],
             "annotations": [{"image_id": 1, "category_id": 105,
                              "segmentation": {"size": [30, 40], "counts": rle_encode([0] + runs)}}]}
    (tmp_path / "annotations" / "stuff_train2017.json").write_text(json.dumps(stuff))
    ds = COCOStuff(tmp_path, size=16, with_masks=True)
    assert len(ds) == 1 and ds[0]["caption"] == "A red wall."
    assert (ds[0]["mask"][:, :7] == 104).all() and (ds[0]["mask"][:, 9:] == 255).all()


def test_coco_stuff_errors(tmp_path):
    with pytest.raises(UserError, match="split"):
        COCOStuff(tmp_path, "test2015")
    with pytest.raises(UserError, match="expected"):
        COCOStuff(tmp_path, "val2017")
    make_coco(tmp_path)
    with pytest.raises(UserError, match="with_masks needs"):
        COCOStuff(tmp_path, "val2017", with_masks=True)
