"""Where stream frames come from and where stylised frames go: video files, image folders, a synthetic clip.

Every source yields frames as float (3, H, W) tensors in [-1, 1], the project's image convention.
Video goes through imageio with an explicitly chosen plugin: GIF through Pillow (always installed),
other containers (.mp4, .avi, ...) through PyAV when it is installed (not in this project's
environment, so that path is untested here), and otherwise a one-line error. The plugin is never left to imageio's guess, because without a video backend imageio
happily writes a TIFF file named `.mp4`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch import Tensor

from muon_ad.data.images import (
    BadImageError,
    SkipSummary,
    array_to_tensor,
    is_image_file,
    open_image,
    save_image_atomic,
    to_pil,
    to_rgb,
    to_tensor,
)
from muon_ad import checks
from muon_ad.data.procedural import make_scene
from muon_ad.errors import UserError

VIDEO_EXTENSIONS = (".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm")

log = logging.getLogger("muon_ad.runtime")


def _video_plugin(path: Path) -> str:
    """The imageio plugin for `path`, or a UserError that says what to install."""
    if path.suffix.lower() == ".gif":
        return "pillow"
    if importlib.util.find_spec("av") is not None:
        return "pyav"
    raise UserError(f"{path}: {path.suffix} video needs a video backend: pip install 'imageio[pyav]'; "
                    "or use a .gif, or a folder of frames")


def _resize(frame: np.ndarray, size: int | None) -> Tensor:
    return to_tensor(frame, size) if size else array_to_tensor(frame)


def video_frames(path: str | Path, size: int | None = None) -> Iterator[Tensor]:
    """Frames of a video file, resized on the short side and centre-cropped to `size` if given."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    import imageio.v3 as iio

    for frame in iio.imiter(path, plugin=_video_plugin(path)):
        yield _resize(np.ascontiguousarray(frame[..., :3]), size)  # GIF frames may carry alpha


def folder_frames(folder: str | Path, size: int | None = None) -> Iterator[Tensor]:
    """The image files of `folder` in name order (frame_0001.png, ...), as frames. An unreadable or truncated file is
    skipped and counted (one summary line at the end), as a dropped frame would be; none usable is an error."""
    folder = Path(folder)
    files = sorted(f for f in folder.iterdir() if is_image_file(f)) if folder.is_dir() else []
    if not files:
        raise UserError(f"no image files in {folder}" if folder.is_dir() else f"frame folder not found: {folder}")
    summary = SkipSummary(len(files))
    for i, file in enumerate(files):
        try:
            image = open_image(file, min_size=1)
            frame = to_tensor(to_rgb(image), size)
        except BadImageError as error:
            summary.mark_bad(i, error.reason)
            log.warning("skipping %s", error)
            continue
        summary.mark_ok(i, converted=image.mode != "RGB")
        yield frame
    if summary.skipped:
        log.warning("%s: %s", folder, summary)
    if sum(summary.skipped.values()) == len(files):
        raise UserError(f"no usable frame in {folder}: {summary}")


def synthetic_frames(size: int = 256, count: int = 48, drift: float = 3.0, hold: int = 6, seed: int = 0) -> Iterator[Tensor]:
    """A camera panning over one procedural scene: `drift` px per frame to the right, a `hold` frames' pause,
    back to the left, another pause, and so on. The pauses are what real footage has and what change
    skipping exploits; the pans give every frame new content. The scene is rendered once, 1.5x the frame
    size, and each frame is a crop of it, so the clip costs nothing to make.
    """
    canvas, _ = make_scene(size * 3 // 2, np.random.default_rng(seed), kind="landscape")
    travel = canvas.shape[1] - size
    steps = max(1, round(travel / drift))  # frames from one end to the other
    for t in range(count):
        phase = t % (2 * (steps + hold))
        if phase < steps:
            x = phase * travel / steps
        elif phase < steps + hold:
            x = travel
        elif phase < 2 * steps + hold:
            x = travel - (phase - steps - hold) * travel / steps
        else:
            x = 0
        left, top = int(round(x)), (canvas.shape[0] - size) // 2
        yield array_to_tensor(canvas[top : top + size, left : left + size])


def open_source(spec: str, size: int | None = None, count: int = 48, seed: int = 0) -> Iterator[Tensor]:
    """Frames from "synthetic", a folder of images, or a video file."""
    if spec == "synthetic":
        return synthetic_frames(size or 256, count, seed=seed)
    path = Path(spec)
    if path.is_dir():
        return folder_frames(path, size)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return video_frames(path, size)
    raise UserError(f"--input must be 'synthetic', a folder of images or a video ({', '.join(VIDEO_EXTENSIONS)}): {spec}")


FRAME = "frame_{:05d}.png"  # the frames `FrameWriter` writes into a folder
FIRST_FRAME = FRAME.format(0)  # what marks a folder as an earlier stream's


def check_frame_output(out: str | Path) -> None:
    """`out` can take a stream, before any frame is made: a video file (not an existing folder), or a folder of
    frames that is new, empty or an earlier stream's (it is replaced whole); an image name is neither."""
    out = Path(out)
    if out.suffix.lower() in VIDEO_EXTENSIONS:
        checks.writable_output("--out", out)
        if out.is_dir():
            raise UserError(f"--out {out}: is a folder; a video goes to a file")
        return
    if is_image_file(out):
        raise UserError(f"--out {out}: a stream is written as a folder of frames or a video "
                        f"({', '.join(VIDEO_EXTENSIONS)}), not one image")
    checks.replaceable_folder("--out", out, FIRST_FRAME)


class FrameWriter:
    """Writes frames as they come: numbered PNGs into folder `out`, or one video when `out` has a video
    extension (GIF always; other containers need a video backend, see `_video_plugin`).

    Nothing half-written: frames go to a temporary `.NAME.tmp-PID` next to `out`, renamed to `out` (replacing an old
    one) when the writer closes normally; if the stream fails or is interrupted, the temporary is removed and any
    previous `out` is untouched."""

    def __init__(self, out: str | Path, fps: float = 24.0) -> None:
        self.out, self.count, self._video = Path(out), 0, None
        self.tmp = self.out.with_name(f".{self.out.stem}.tmp-{os.getpid()}{self.out.suffix}")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.out.suffix.lower() in VIDEO_EXTENSIONS:
            plugin = _video_plugin(self.out)
            import imageio.v3 as iio

            self._video = iio.imopen(self.tmp, "w", plugin=plugin)  # the temporary keeps the suffix
            # GIF timing is milliseconds per frame, and Pillow merges identical consecutive frames into one
            # longer frame (so a GIF read back may have fewer frames, same timing). PyAV opens its stream on
            # the first write.
            self._options = {"duration": round(1000 / fps), "loop": 0} if plugin == "pillow" else {"codec": "libx264", "fps": fps}

    def write(self, frame: Tensor) -> None:
        if self._video is None:
            save_image_atomic(frame, self.tmp / FRAME.format(self.count))
        else:
            self._video.write(np.asarray(to_pil(frame)), is_batch=False, **self._options)
        self.count += 1

    def close(self, keep: bool = True) -> None:
        """Finish: move the frames into place (`keep`), or throw them away."""
        if self._video is not None:
            self._video.close()
            self._video = None
        if not self.tmp.exists():
            return
        if not keep:
            shutil.rmtree(self.tmp) if self.tmp.is_dir() else self.tmp.unlink()
            return
        if self.out.is_dir():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(keep=exc_type is None)
