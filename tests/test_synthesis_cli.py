"""`muon-ad stylize / texture / sample --style` end to end on a tiny teacher saved to disk, and bad inputs."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from muon_ad.cli import app
from muon_ad.data.procedural import make_scene, make_texture
from muon_ad.errors import UserError
from muon_ad.models.teacher import build_tiny_teacher, save_teacher
from tiny import TINY_TEACHER


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthesis")
    torch.manual_seed(0)
    save_teacher(build_tiny_teacher(TINY_TEACHER, ["a", "cat"]), root / "teacher")
    rng = np.random.default_rng(0)
    Image.fromarray(make_scene(40, rng)[0]).save(root / "content.png")
    Image.fromarray(make_texture("dots", "blue_orange", 48, rng)).convert("L").save(root / "style.jpg")  # grayscale
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (8, 8)).save(root / "tiny.png")
    return root


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def curve_rows(out):
    with open(out.with_suffix(".loss.csv")) as f:
        return list(csv.DictReader(f))


def test_stylize_writes_png_and_loss_curve(files):
    out = files / "out" / "stylized.png"
    result = run("stylize", "--content", files / "content.png", "--style", files / "style.jpg", "--steps", 3,
                 "--teacher", files / "teacher", "--out", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (40, 40)  # the content's own size: it is under the working size's cap
    assert "working size 40x40 px (content 40x40" in result.output
    rows = curve_rows(out)
    assert [int(r["step"]) for r in rows] == [0, 1, 2] and all(float(r["loss"]) >= 0 for r in rows)
    assert Image.open(out.with_suffix(".loss.png")).size[0] > 100
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]  # every temporary was renamed


def test_texture_tiles_at_a_chosen_size_with_muon(files):
    out = files / "texture.png"
    result = run("texture", "--exemplar", files / "style.jpg", "--size", 16, 24, "--steps", 2, "--tile",
                 "--optimizer", "muon", "--teacher", files / "teacher", "--out", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (24, 16) and len(curve_rows(out)) == 2


def test_sample_with_style_is_ad_guided(files):
    out = files / "guided.png"
    result = run("sample", "--prompt", "a cat", "--style", files / "style.jpg", "--steps", 2, "--ad-iters", 2,
                 "--teacher", files / "teacher", "--out", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 32)
    rows = curve_rows(out)
    assert len(rows) == 4 and rows[0]["timestep"] > rows[-1]["timestep"]  # 2 DDIM steps x 2 AD steps


@pytest.mark.parametrize("bad, reason", [("missing.png", "unreadable"), ("corrupt.png", "unreadable"), ("tiny.png", "too small")])
def test_bad_inputs_are_one_line_errors_and_write_nothing(files, bad, reason):
    out = files / f"bad-{reason}.png"
    for args in (("stylize", "--content", files / bad, "--style", files / "style.jpg"),
                 ("stylize", "--content", files / "content.png", "--style", files / bad),
                 ("texture", "--exemplar", files / bad)):
        result = run(*args, "--teacher", files / "teacher", "--out", out)
        assert isinstance(result.exception, UserError), result.output
        message = str(result.exception)
        assert reason in message and bad in message and "\n" not in message
    assert not out.exists()


def test_bad_options_are_one_line_errors(files):
    common = ("--teacher", files / "teacher")
    cases = [
        (("texture", "--exemplar", files / "style.jpg", "--size", 30, 32, *common, "--out", files / "t.png"), "multiples of 4"),
        (("texture", "--exemplar", files / "style.jpg", "--optimizer", "sgd", *common, "--out", files / "t.png"), "--optimizer must be one of adam, muon, got 'sgd'"),
        (("texture", "--exemplar", files / "style.jpg", *common, "--out", files / "t.jpg"), "use a .png"),
        (("stylize", "--content", files / "content.png", "--style", files / "style.jpg", "--content-mask", files / "content.png",
          *common, "--out", files / "s.png"), "give both"),
    ]
    for args, match in cases:
        result = run(*args)
        assert isinstance(result.exception, UserError) and match in str(result.exception), (args, result.output)


def test_sample_at_a_chosen_size(files):
    out = files / "sized.png"
    result = run("sample", "--prompt", "a cat", "--steps", 2, "--size", 16, "--teacher", files / "teacher", "--out", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (16, 16) and "sampling at 16x16 px" in result.output
    result = run("sample", "--prompt", "a cat", "--size", 18, "--teacher", files / "teacher", "--out", out)
    assert "nearest valid: --size 16" in str(result.exception)  # multiples of 4 for this teacher
