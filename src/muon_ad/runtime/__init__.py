"""Running a trained student: one backend interface (torch or ONNX Runtime) with one pre/post-processing path,
frame sources and writers, the `Stylizer` (change skipping) and the real-time loop."""

from muon_ad.runtime.backends import (
    OnnxStudent,
    StudentBackend,
    TorchStudent,
    default_student,
    encode_style,
    load_backend,
    run_student,
    stylize_image,
)
from muon_ad.runtime.sources import (
    FrameWriter,
    check_frame_output,
    folder_frames,
    open_source,
    synthetic_frames,
    video_frames,
)
from muon_ad.runtime.stream import StreamStats, run_stream
from muon_ad.runtime.stylizer import Stylizer

__all__ = [
    "FrameWriter",
    "OnnxStudent",
    "StreamStats",
    "StudentBackend",
    "Stylizer",
    "TorchStudent",
    "check_frame_output",
    "default_student",
    "encode_style",
    "folder_frames",
    "load_backend",
    "open_source",
    "run_student",
    "run_stream",
    "stylize_image",
    "synthetic_frames",
    "video_frames",
]
