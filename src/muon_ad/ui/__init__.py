"""The web UI (`muon-ad ui`, the optional `ui` extra: Gradio): style transfer, texture synthesis, text to image and
the student on a webcam or a video, with live progress and loss curves, over the same library calls as the CLI."""

from muon_ad.ui.app import build_app, launch

__all__ = ["build_app", "launch"]
