"""The parts of a training loop every recipe shares: its progress bar, and stopping on a signal at a step boundary."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Protocol, TextIO

from tqdm.auto import tqdm

from muon_ad.training.distributed import any_rank, is_main_process

log = logging.getLogger("muon_ad.training")


def progress_bar(total: int | None = None, initial: int = 0, desc: str = "", *, iterable: Iterable | None = None,
                 leave: bool = True, unit: str = "it", disable: bool = False, every: int | None = None,
                 stream: TextIO | None = None):
    """The one progress display of every loop (training, AD, banks, streams): a tqdm bar on a terminal; written
    to a file or a pipe, a plain line every `every` steps instead (default: about 10 lines a run, or every 100 when
    the length is unknown), because a bar's carriage-return redraws fill a log with thousands of updates.
    Either way the object has tqdm's `update`, `set_postfix`, `close` and iteration over `iterable`."""
    stream = stream or sys.stderr
    disable = disable or not is_main_process()  # one display per run: rank 0's
    if disable or stream.isatty():
        return tqdm(iterable, total=total, initial=initial, desc=desc, leave=leave, unit=unit, disable=disable,
                    dynamic_ncols=True, file=stream)
    return LineProgress(iterable, total, initial, desc, unit, every, stream)


class LineProgress:
    """A progress display for logs: `desc: n/total (rate unit/s) key=value ...`, one line every `every` steps and at
    the end."""

    def __init__(self, iterable: Iterable | None, total: int | None, initial: int, desc: str, unit: str,
                 every: int | None, stream: TextIO) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.n, self.desc, self.unit, self.stream = iterable, total, initial, desc, unit, stream
        self.every = every or (max(1, total // 10) if total else 100)
        self.postfix: dict[str, object] = {}
        self._start, self._start_n, self._last_line = time.perf_counter(), initial, initial

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n // self.every > self._last_line // self.every or self.n == self.total:
            self._line()

    def set_postfix(self, refresh: bool = True, **values: object) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.n != self._last_line:
            self._line()

    def _line(self) -> None:
        self._last_line = self.n
        seconds = time.perf_counter() - self._start
        rate = (self.n - self._start_n) / seconds if seconds > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {done} ({rate:.2f} {self.unit}/s){extra}", file=self.stream, flush=True)


class Closable(Protocol):
    def close(self) -> None: ...


class GracefulStop:
    """While active, Ctrl-C (SIGINT) and SIGTERM only ask the loop to stop: it finishes the step it is in, saves
    a checkpoint at that boundary and raises KeyboardInterrupt. A signal that interrupted the step itself would
    leave the RNG (and perhaps the optimizer) advanced by half a step, and the resumed run would differ. A
    second signal stops at once, saving nothing (the last checkpoint stays the resume point).

    `closing`: what the loop must close however it ends (progress bar, logs), closed on exit while the handlers
    are still in place: torchrun SIGTERMs the other ranks as soon as one dies, and under the default handler that
    signal killed rank 0 while it closed its logs (TensorBoard's writer takes a while), before it could say why."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, closing: Iterable[Closable] = ()) -> None:
        self.requested = False
        self.closing = list(closing)
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for thing in self.closing:
                thing.close()
        finally:
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
