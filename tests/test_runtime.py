import pytest
import torch

from muon_ad.errors import UserError
from muon_ad.models.student import Student, StudentConfig
from muon_ad.runtime import sources
from muon_ad.runtime.sources import FrameWriter, open_source, synthetic_frames
from muon_ad.runtime.stream import run_stream
from muon_ad.runtime.backends import TorchStudent, encode_style, run_student
from muon_ad.runtime.stylizer import Stylizer

TINY = StudentConfig(base_channels=8, channel_mult=(1, 2), attention_levels=1, heads=2, style_channels=(8, 8),
                     style_dim=16, style_grid=2, style_size=16)


def _student() -> Student:
    torch.manual_seed(0)
    student = Student(TINY).eval()
    torch.nn.init.normal_(student.output_layer.weight, std=0.05)  # not the identity map an untrained student is
    return student


def _style() -> torch.Tensor:
    return torch.linspace(-1, 1, 3 * 16 * 16).reshape(3, 16, 16)


def test_synthetic_clip_pans_then_holds_still():
    frames = list(synthetic_frames(size=32, count=20, drift=4.0, hold=3))
    assert len(frames) == 20 and frames[0].shape == (3, 32, 32)
    assert -1 <= frames[0].min() and frames[0].max() <= 1
    steps = 4  # the 48 px canvas leaves 16 px of travel: 4 frames of 4 px
    moving = [not torch.equal(a, b) for a, b in zip(frames, frames[1:])]
    assert moving[: steps] == [True] * steps  # panning right
    assert moving[steps : steps + 3] == [False] * 3  # holding at the right end
    assert moving[steps + 3]  # and panning back
    assert torch.equal(frames[0], frames[2 * (steps + 3)])  # one full cycle returns to the start


def test_folder_and_gif_sources_round_trip_through_the_writer(tmp_path):
    frames = list(synthetic_frames(size=24, count=5, drift=2.0, hold=1))
    with FrameWriter(tmp_path / "frames") as writer:
        for frame in frames:
            writer.write(frame)
    from_folder = list(open_source(str(tmp_path / "frames")))
    assert len(from_folder) == 5 and (from_folder[3] - frames[3]).abs().max() <= 1 / 127.5 + 1e-6  # 8-bit PNG

    with FrameWriter(tmp_path / "clip.gif", fps=10) as writer:
        for frame in frames:
            writer.write(frame)
    from_gif = list(open_source(str(tmp_path / "clip.gif"), size=16))
    assert len(from_gif) == 5 and from_gif[0].shape == (3, 16, 16)


def test_sources_fail_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)  # no video backend installed
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    with pytest.raises(UserError, match="needs a video backend"):
        list(open_source(str(tmp_path / "clip.mp4")))
    with pytest.raises(UserError, match="needs a video backend"):
        FrameWriter(tmp_path / "out.mp4")
    with pytest.raises(UserError, match="no image files"):
        list(open_source(str(tmp_path)))
    with pytest.raises(UserError, match="--input must be"):
        open_source(str(tmp_path / "notes.txt"))


def test_stylizer_matches_the_student_and_skips_only_unchanged_frames():
    student, style = _student(), _style()
    frames = list(synthetic_frames(size=32, count=14, drift=4.0, hold=3))
    with torch.no_grad():
        expected = student(frames[1].unsqueeze(0), style.unsqueeze(0))[0]

    every = Stylizer(TorchStudent(student), style, skip_threshold=0.0)
    outputs = [every(f) for f in frames]
    assert torch.allclose(outputs[1], expected, atol=1e-5)

    skipping = Stylizer(TorchStudent(student), style, skip_threshold=1e-3)
    stats = run_stream(frames, skipping, sink=None, progress=False)
    # 14 frames: pan 0-4, hold 5-7, pan back 8-11, hold 12-13 -> 3 + 2 frames identical to their predecessor.
    assert (stats.frames, stats.stylised, stats.skipped) == (14, 9, 5)
    assert len(stats.model_ms) == 9 and stats.fps > 0 and stats.model_fps > 0

    collected = []
    run_stream(frames, Stylizer(TorchStudent(student), style, skip_threshold=1e-3), sink=collected.append,
               progress=False)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(collected, outputs))  # skipping changes nothing here


def test_a_slow_drift_is_caught_up_with_instead_of_skipped_forever():
    student, style = _student(), _style()
    base = torch.zeros(3, 16, 16)
    frames = [base + 0.004 * i for i in range(10)]  # each frame differs from the last by 0.004
    stylizer = Stylizer(TorchStudent(student), style, skip_threshold=0.01)
    ran = []
    for frame in frames:
        stylizer(frame)
        ran.append(not stylizer.skipped)
    assert ran == [True, False, False, True, False, False, True, False, False, True]


def test_the_torch_backend_runs_a_channels_last_copy_and_leaves_the_callers_student_as_it_was():
    student = _student()
    backend = TorchStudent(student)
    # The caller may go on to export or prune its student: its tensors keep their layout.
    assert all(p.is_contiguous() for p in student.parameters())
    assert backend.student.stem[1].weight.is_contiguous(memory_format=torch.channels_last)
    content = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    code = encode_style(backend, _style())
    with torch.no_grad():
        assert torch.allclose(run_student(backend, content, code), student.apply_style(content, code), atol=1e-5)


def test_one_preprocessing_path_for_any_content_and_style_size():
    student, backend = _student(), TorchStudent(_student())
    content = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(1)) * 2 - 1  # not multiples of 4
    wide_style = torch.rand(3, 16, 40, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = run_student(backend, content, encode_style(backend, wide_style))
    assert out.shape == content.shape and out.abs().max() <= 1
    square = wide_style[:, :, 12:28]  # the centre square: the style is cropped, never squashed
    with torch.no_grad():
        expected = student(content, square.unsqueeze(0))
    assert torch.allclose(out, expected, atol=1e-5)
