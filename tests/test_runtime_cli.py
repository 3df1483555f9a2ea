"""`muon-ad stream` and `muon-ad evaluate` as a user runs them, on a tiny student saved the way distill saves it."""

import json

import pytest
import torch
from typer.testing import CliRunner

from muon_ad.cli import app
from muon_ad.data.images import save_image_atomic
from muon_ad.errors import UserError
from muon_ad.eval.domain_features import DomainFeatures
from muon_ad.models.student import Student, StudentConfig, save_student
from muon_ad.runtime.sources import folder_frames, video_frames

TINY = StudentConfig(base_channels=8, channel_mult=(1, 2), attention_levels=1, heads=2, style_channels=(8, 8),
                     style_dim=16, style_grid=2, style_size=16)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return str(save_student(Student(TINY), tmp_path_factory.mktemp("run") / "student"))


def test_stream_writes_every_frame_and_reports_skips(student, tmp_path):
    save_image_atomic(torch.linspace(-1, 1, 3 * 16 * 16).reshape(3, 16, 16), tmp_path / "style.png")
    result = CliRunner().invoke(app, ["stream", "--student", student, "--style", str(tmp_path / "style.png"),
                                      "--size", "32", "--frames", "20", "--skip-threshold", "0.001",
                                      "--out", str(tmp_path / "frames")])
    assert result.exit_code == 0, result.output
    assert "20 frames (" in result.output and "skipped)" in result.output
    written = list(folder_frames(tmp_path / "frames"))
    assert len(written) == 20 and written[0].shape == (3, 32, 32)

    result = CliRunner().invoke(app, ["stream", "--student", student, "--style", str(tmp_path / "style.png"),
                                      "--input", str(tmp_path / "frames"), "--out", str(tmp_path / "clip.gif")])
    assert result.exit_code == 0, result.output
    assert len(list(video_frames(tmp_path / "clip.gif"))) >= 2  # GIF merges identical consecutive frames


def test_evaluate_a_student_and_an_image_folder(student, tmp_path):
    torch.manual_seed(0)
    DomainFeatures(["a", "b"], widths=(8, 16), size=32).save(tmp_path / "features")
    result = CliRunner().invoke(app, ["evaluate", student, "--count", "4", "--size", "32", "--feature-path",
                                      str(tmp_path / "features"), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_fake"] == 4 and metrics["fid_domain"] >= 0 and 0 < metrics["ssim"] <= 1
    assert "| FID-domain |" in (tmp_path / "eval" / "metrics.md").read_text()

    images = str(tmp_path / "eval" / "images")
    result = CliRunner().invoke(app, ["evaluate", images, "--real", images, "--feature-path", str(tmp_path / "features"),
                                      "--out", str(tmp_path / "eval2")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval2" / "metrics.json").read_text())["fid_domain"] == pytest.approx(0, abs=1e-3)

    result = CliRunner().invoke(app, ["evaluate", images, "--out", str(tmp_path / "eval3")])
    assert isinstance(result.exception, UserError) and "give --real" in str(result.exception)


def test_stream_skips_and_counts_bad_frames_and_leaves_nothing_half_written(student, tmp_path, monkeypatch, caplog):
    frames = tmp_path / "frames"
    for i in range(4):
        save_image_atomic(torch.full((3, 24, 24), i / 4 - 0.5), frames / f"frame_{i:02d}.png")
    (frames / "frame_01b.png").write_bytes(b"garbage, not a PNG")
    save_image_atomic(torch.zeros(3, 16, 16), tmp_path / "style.png")
    args = ["stream", "--student", student, "--style", str(tmp_path / "style.png"), "--input", str(frames), "--size", "16"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "4 frames (" in result.output and len(list((tmp_path / "out").iterdir())) == 4
    assert "skipped 1 (1 unreadable)" in caplog.text  # the one-line summary

    # A stream that fails half-way leaves the previous output as it was, and no temporary behind.
    calls = {"n": 0}
    real_write = save_image_atomic

    def failing_write(image, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_write(image, path)

    monkeypatch.setattr("muon_ad.runtime.sources.save_image_atomic", failing_write)
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert len(list((tmp_path / "out").iterdir())) == 4 and sorted(p.name for p in tmp_path.iterdir()) == [
        "frames", "out", "style.png"]
    calls["n"] = 0
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "new")])
    assert result.exit_code != 0 and not (tmp_path / "new").exists()


def test_evaluate_outputs_and_contents_of_different_sizes_with_a_bad_file(tmp_path, caplog):
    """AD outputs are the teacher's size, contents are photos: FID/KID per set, SSIM at each output's size; an
    unreadable output is skipped with its pair, counted in one line."""
    torch.manual_seed(0)
    DomainFeatures(["a", "b"], widths=(8, 16), size=32).save(tmp_path / "features")
    for i in range(4):
        save_image_atomic(torch.rand(3, 48, 48) * 2 - 1, tmp_path / "out" / f"{i}.png")
        save_image_atomic(torch.rand(3, 96, 128) * 2 - 1, tmp_path / "content" / f"{i}.png")
    (tmp_path / "out" / "4.png").write_bytes(b"half-written")
    save_image_atomic(torch.rand(3, 96, 128) * 2 - 1, tmp_path / "content" / "4.png")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "out"), "--real", str(tmp_path / "content"),
                                      "--pairs", str(tmp_path / "content"), "--feature-path", str(tmp_path / "features"),
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_fake"] == 4 and metrics["num_real"] == 5 and 0 <= metrics["ssim"] <= 1
    assert "fewer than 50" in metrics["warning"]  # 4 images: FID/KID are flagged as noisy
    assert "skipped 1 (1 unreadable)" in caplog.text and "SSIM/PSNR on 4 of 5 pairs" in caplog.text
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert f"| KID-domain (mean ± std over subsets) | {metrics['kid_domain_mean']:.4g} ± " in table
