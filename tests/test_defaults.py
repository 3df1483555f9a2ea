"""What a new user meets first: the built-in artefacts found wherever they run from (or a hint that names them),
sizes chosen to fit the input, and every mistake answered in one line before torch is imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import muon_ad
from muon_ad import DEFAULT_STUDENT, DEFAULT_TEACHER, default_path, missing_hint

SRC = str(Path(muon_ad.__file__).resolve().parents[1])

# Runs the command line in this process and reports whether torch (or diffusers) got imported on the way.
PROBE = """
import sys
from muon_ad.cli import main
sys.argv = ["muon-ad", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]
print("HEAVY=" + ",".join(heavy), "EXIT=" + str(code))
"""


def cli(*args, cwd, home=""):
    env = {**os.environ, "PYTHONPATH": SRC, "MUON_AD_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def fake_teacher(folder: Path) -> Path:
    """The config files of the built-in teacher's geometry (latent /4, UNet /2: sides multiples of 8, 48 px): all a
    size check reads. No weights, so a command that got as far as loading it would fail."""
    for name, config in (("vae", {"block_out_channels": [16, 32, 64]}),
                         ("unet", {"block_out_channels": [32, 64], "sample_size": 12})):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def pictures(tmp_path):
    Image.new("RGB", (200, 100), (120, 120, 120)).save(tmp_path / "wide.png")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "style.png")
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    (tmp_path / "one").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "one" / "a.png")
    (tmp_path / "one" / "b.png").write_bytes(b"not an image either")
    return tmp_path


def test_defaults_resolve_in_the_current_folder_then_muon_ad_home(tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / DEFAULT_TEACHER / "unet").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MUON_AD_HOME", "")
    assert default_path(DEFAULT_TEACHER) == Path(DEFAULT_TEACHER)  # not found: where the command that makes it writes
    monkeypatch.setenv("MUON_AD_HOME", str(home))
    assert default_path(DEFAULT_TEACHER) == home / DEFAULT_TEACHER  # found from another folder
    (elsewhere / DEFAULT_TEACHER).mkdir(parents=True)
    assert default_path(DEFAULT_TEACHER) == elsewhere / DEFAULT_TEACHER  # the current folder's comes first


def test_a_missing_default_names_the_one_a_demo_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "train-teacher" in missing_hint(DEFAULT_TEACHER, "--teacher")  # nothing anywhere: how to make it
    (tmp_path / "demo-report/teacher/teacher/unet").mkdir(parents=True)
    (tmp_path / "demo-report/distill/muon/student").mkdir(parents=True)
    (tmp_path / "demo-report/distill/muon/student/config.json").write_text("{}")
    assert missing_hint(DEFAULT_TEACHER, "--teacher") == \
        f"found one at {tmp_path}/demo-report/teacher/teacher: pass --teacher {tmp_path}/demo-report/teacher/teacher"
    assert "pass --student" in missing_hint(DEFAULT_STUDENT, "--student")
    result = cli("stream", "--style", tmp_path / "none.png", cwd=tmp_path)  # the style is checked first
    assert "--style" in result.stderr
    Image.new("RGB", (32, 32)).save(tmp_path / "s.png")
    result = cli("stream", "--style", "s.png", cwd=tmp_path)
    assert "student not found" in result.stderr and "pass --student" in result.stderr, result.stderr
    assert "HEAVY= EXIT=2" in result.stdout


@pytest.mark.parametrize("args, message", [
    (("stylize", "-c", "wide.png", "-s", "style.png", "--optimizer", "sgd"), "--optimizer must be one of adam, muon"),
    (("stylize", "-c", "missing.png", "-s", "style.png"), "--content missing.png: unreadable image (no such file)"),
    (("stylize", "-c", "garbage.png", "-s", "style.png"), "unreadable image (UnidentifiedImageError)"),
    (("stylize", "-c", "wide.png", "-s", "style.png", "--size", "4", "--teacher", "T"), "nearest valid: --size 8"),
    (("texture", "-e", "style.png", "--size", "50", "60", "--teacher", "T"), "nearest valid: --size 48 64"),
    (("sample", "-p", "red stripes", "--size", "100", "--teacher", "T"), "nearest valid: --size 96"),
    (("sample", "-p", "red stripes", "--style", "garbage.png", "--teacher", "T"), "unreadable image (UnidentifiedImageError)"),
    (("stream", "--style", "style.png", "--input", "nowhere", "--student", "T"), "--input nowhere: not found"),
    (("stream", "--style", "style.png", "--size", "2"), "--size must be"),
    (("evaluate", "one", "--real", "."), "TARGET one: 1 readable image files, at least 2 needed"),
    (("evaluate", ".", "--real", ".", "--pairs", "one"), "--pairs one: 2 image files for 3 in ."),
    (("distill", "absent.yaml"), "config file not found: absent.yaml"),
    (("distill-t2i", "absent.yaml"), "config file not found: absent.yaml"),
])
def test_mistakes_are_answered_before_torch_is_imported(pictures, args, message):
    fake_teacher(pictures / "T")
    result = cli(*args, cwd=pictures)
    assert message in result.stderr, result.stderr
    assert result.stdout.strip().endswith("HEAVY= EXIT=2"), (result.stdout, result.stderr)


def test_stylize_and_texture_keep_the_aspect_at_a_working_size(pictures, monkeypatch):
    from typer.testing import CliRunner

    from muon_ad.cli import app

    monkeypatch.chdir(pictures)
    teacher = str(fake_teacher(pictures / "T"))
    Image.new("RGB", (1024, 512)).save(pictures / "photo.png")
    # The sizes are chosen and printed before the teacher loads (this one has no weights, so loading then fails).
    for args, chosen in [(("stylize", "-c", "wide.png"), "working size 200x96 px (content 200x100"),  # its own size
                         (("stylize", "-c", "photo.png"), "working size 256x128 px"),  # short side 128, not 48 (a blob)
                         (("texture", "-e", "photo.png"), "output size 128x256 px")]:  # height x width: its aspect
        result = CliRunner().invoke(app, [*args, *(["-s", "style.png"] if args[0] == "stylize" else []), "--teacher", teacher])
        assert chosen in result.output, result.output
        assert "not a diffusers SD folder" in str(result.exception)
