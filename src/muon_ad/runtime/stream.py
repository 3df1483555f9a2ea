"""The real-time loop: frames in, stylised frames out, with a live FPS readout and honest totals.

`fps` counts every frame delivered, end to end (read + stylise, writing excluded), which is what a
viewer sees; `model_fps` counts only the forward passes that ran, which is what the model costs.
With change skipping on, the first exceeds the second exactly by the frames that were skipped.
"""

from __future__ import annotations

import statistics

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from torch import Tensor

from muon_ad.runtime.stylizer import Stylizer
from muon_ad.training.loop import progress_bar


@dataclass
class StreamStats:
    frames: int = 0
    stylised: int = 0
    seconds: float = 0.0  # wall time of reading and stylising every frame
    model_ms: list[float] = field(default_factory=list)  # one per forward pass that ran

    @property
    def skipped(self) -> int:
        return self.frames - self.stylised

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def model_fps(self) -> float:
        return 1000.0 / statistics.median(self.model_ms) if self.model_ms else 0.0

    def summary(self) -> dict[str, float]:
        return {"frames": self.frames, "stylised": self.stylised, "skipped": self.skipped,
                "fps": self.fps, "model_fps": self.model_fps, "seconds": self.seconds}


def run_stream(
    frames: Iterable[Tensor],
    stylizer: Stylizer,
    sink: Callable[[Tensor], None] | None = None,
    progress: bool = True,
) -> StreamStats:
    """Stylise each frame and hand it to `sink`; shows FPS over the last 10 frames while it runs."""
    stats = StreamStats()
    recent: deque[float] = deque(maxlen=10)
    bar = progress_bar(desc="stream", unit="frame", disable=not progress)
    source = iter(frames)
    try:
        while True:
            tick = time.perf_counter()
            frame = next(source, None)
            if frame is None:
                break
            model_start = time.perf_counter()
            output = stylizer(frame)
            done = time.perf_counter()
            if not stylizer.skipped:
                stats.stylised += 1
                stats.model_ms.append((done - model_start) * 1000.0)
            stats.frames += 1
            stats.seconds += done - tick
            recent.append(done - tick)
            if sink is not None:
                sink(output)
            bar.set_postfix(fps=f"{len(recent) / sum(recent):.1f}", skipped=stats.skipped, refresh=False)
            bar.update()
    finally:
        bar.close()
    return stats
