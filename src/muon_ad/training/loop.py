"""The parts of a training loop every recipe shares: its progress bar, and stopping on a signal at a step boundary."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from tqdm.auto import tqdm

from muon_ad.training.distributed import any_rank, is_main_process

log = logging.getLogger("muon_ad.training")


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=not is_main_process())


class GracefulStop:
    """While active, Ctrl-C (SIGINT) and SIGTERM only ask the loop to stop: it finishes the step it is in, saves
    a checkpoint at that boundary and raises KeyboardInterrupt. A signal that interrupted the step itself would
    leave the RNG (and perhaps the optimizer) advanced by half a step, and the resumed run would differ. A
    second signal stops at once, saving nothing (the last checkpoint stays the resume point)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step to save a checkpoint (signal again to stop at once, unsaved)")

    def at_boundary(self, step: int, due: bool, save: Callable[[], None]) -> None:
        """Call after every completed step: saves when a checkpoint is `due` or a stop was asked for, then stops.
        On several processes a signal to any rank stops them all at the same step (one small all-reduce)."""
        self.requested = any_rank(self.requested)
        if due or self.requested:
            save()
        if self.requested:
            log.warning("interrupted at step %d: checkpoint saved; run the same command to resume", step)
            raise KeyboardInterrupt
