"""Real-time stylisation: frame sources and writers, the `Stylizer` (torch or ONNX Runtime, change skipping), the loop."""

from muon_ad.runtime.sources import FrameWriter, folder_frames, open_source, synthetic_frames, video_frames
from muon_ad.runtime.stream import StreamStats, run_stream
from muon_ad.runtime.stylizer import OnnxModel, Stylizer, default_student, load_model

__all__ = [
    "FrameWriter",
    "OnnxModel",
    "StreamStats",
    "Stylizer",
    "default_student",
    "folder_frames",
    "load_model",
    "open_source",
    "run_stream",
    "synthetic_frames",
    "video_frames",
]
