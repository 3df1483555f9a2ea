import pytest
import torch

from muon_ad.attention import AttentionCapture, self_attention_layer_names
from muon_ad.errors import UserError
from muon_ad.models.student import Student, StudentConfig, load_student, save_student

TINY = dict(base_channels=8, channel_mult=(1, 2, 4), stem_stride=2, heads=2, style_channels=(8, 16), style_dim=16,
            style_grid=2, style_size=16, norm_groups=4)


def student(**overrides) -> Student:
    torch.manual_seed(0)
    model = Student(StudentConfig(**{**TINY, **overrides}))
    with torch.no_grad():  # a trained-looking student: the zero-initialised head would return the content
        model.output_layer.weight.normal_(std=0.5)
    return model.eval()


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


FIRST = {"position_periods": (), "head": "pixel_shuffle"}  # the first shape's image path
SHAPES = {"cross_attention": {"style_injection": "cross_attention", **FIRST}, "adain": {"style_injection": "adain", **FIRST},
          "texture": {"style_injection": "statistics", "style_size": None, "position_periods": (8, 16), "head": "refine"}}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [(37, 53), (5, 7), (16, 16)])
def test_output_keeps_any_size_and_stays_in_range(shape, size):
    model = student(**SHAPES[shape])
    content = images(2, 3, *size)
    with torch.no_grad():
        out = model(content, images(1, 3, 29, 41, seed=1))  # one style for the whole batch, any size
    assert out.shape == content.shape
    assert out.abs().max() <= 1 and not torch.equal(out, content)


def test_style_changes_the_output_and_cached_tokens_give_the_same_image():
    model = student()
    content, styles = images(2, 3, 24, 24), images(2, 3, 16, 16, seed=1)
    with torch.no_grad():
        out = model(content, styles)
        assert torch.equal(model.apply_style(content, model.encode_style(styles)), out)
        assert (model(content, styles.flip(0)) - out).abs().mean() > 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_untrained_student_returns_its_content(shape):
    content = images(1, 3, 20, 20) * 0.9
    with torch.no_grad():
        out = Student(StudentConfig(**{**TINY, **SHAPES[shape]}))(content, images(1, 3, 16, 16, seed=1))
    torch.testing.assert_close(out, content, atol=1e-5, rtol=0)


def test_the_statistics_encoder_sees_the_style_at_the_size_it_is_given():
    model = student(**SHAPES["texture"])
    style = images(1, 3, 32, 32, seed=1)
    with torch.no_grad():
        tokens = model.encode_style(style)
        smaller = model.encode_style(torch.nn.functional.interpolate(style, size=(16, 16), mode="bilinear"))
    assert tokens.shape == (1, 1, TINY["style_dim"])
    assert (tokens - smaller).abs().max() > 1e-3  # not resized to one size first: texture scale is part of the code


def test_a_folder_saved_before_the_texture_knobs_loads_as_the_shape_it_was(tmp_path):
    import json

    old = student(**SHAPES["cross_attention"])
    folder = save_student(old, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    for key in ("head", "position_periods"):
        del config[key]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "checksums.json").unlink()  # as such folders were saved; config.json is edited here
    loaded = load_student(folder)
    assert loaded.config.head == "pixel_shuffle" and loaded.config.position_periods == ()
    content, style = images(1, 3, 24, 24), images(1, 3, 16, 16, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(content, style), old(content, style))


def test_attention_levels_are_self_attention_layers_the_capture_reads():
    model = student(attention_levels=2)
    names = self_attention_layer_names(model)
    assert len(names) == 5  # down at the two lowest levels, mid, up at the same two levels
    with AttentionCapture(model, layers=names, record=(), maps="mean") as capture, torch.no_grad():
        model(images(1, 3, 32, 32), images(1, 3, 16, 16, seed=1))
    tokens = [capture.records[n]["maps"].shape[-1] for n in names]
    assert tokens == [64, 16, 16, 16, 64]  # 32 px, stem 2: level 1 is an 8x8 grid, level 2 a 4x4 grid
    assert len(self_attention_layer_names(student(attention_levels=1))) == 3


def test_save_and_load_round_trip(tmp_path):
    model = student(style_injection="adain")
    folder = save_student(model, tmp_path / "student")
    loaded = load_student(folder)
    assert loaded.config == model.config and not loaded.training
    content, style = images(1, 3, 19, 23), images(1, 3, 16, 16, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(content, style), model(content, style))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left behind
    with pytest.raises(UserError, match="not a student folder"):
        load_student(tmp_path)


def test_a_corrupt_student_folder_is_refused_in_one_line(tmp_path):
    folder = save_student(student(), tmp_path / "student")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1000:] = bytes(b ^ 0xFF for b in data[-1000:])  # 1000 bytes inverted: still a loadable file
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.safetensors is missing or does not match its checksum"):
        load_student(folder)


def test_bad_widths_are_one_line_errors():
    with pytest.raises(UserError, match="not divisible by student.heads"):
        StudentConfig(**{**TINY, "heads": 3})
    with pytest.raises(UserError, match="attention_levels"):
        StudentConfig(**{**TINY, "attention_levels": 4})
    cfg = StudentConfig(**TINY)
    cfg.heads = 3  # as a command-line override sets it, after __post_init__
    with pytest.raises(UserError, match="not divisible by student.heads"):
        Student(cfg)


def test_stylize_cli_runs_a_saved_student(tmp_path):
    """`muon-ad stylize --student DIR` is one forward pass of the saved student, written as a PNG."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from muon_ad.models.student import Student, StudentConfig, save_student

    torch.manual_seed(0)
    save_student(Student(StudentConfig()), tmp_path / "student")
    rng = np.random.default_rng(0)
    for name, shape in (("content.png", (40, 56, 3)), ("style.png", (64, 64, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / name)
    result = subprocess.run([sys.executable, "-m", "muon_ad", "stylize", "--student", str(tmp_path / "student"),
                             "-c", str(tmp_path / "content.png"), "-s", str(tmp_path / "style.png"),
                             "--out", str(tmp_path / "out.png")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out.png").size == (56, 40)  # the content's own size and aspect
