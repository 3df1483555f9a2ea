"""What every tab of the web UI shares: long runs reported live, errors in one line, models loaded once.

- `run_live(work)`: `work(report)` runs in a worker thread while the handler's generator yields what it
  reported, in batches at most every `interval` seconds, so the page sees progress (a loss curve growing)
  without one websocket message per optimiser step. When the page goes away Gradio closes the generator;
  the next `report` then raises `Cancelled` in the worker, so an abandoned run stops at its next step.
- `one_line_errors`: a `UserError` becomes a `gr.Error` with its one line (what the CLI prints); anything
  else is logged with its traceback on the server and shown as one line naming the exception.
- `teacher` / `student`: loaded once per folder, reloaded when the folder itself is replaced (its inode or
  mtime changes, which is what the project's atomic folder writes do), one teacher kept at a time.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from muon_ad.errors import UserError

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised in the worker by `report` once nobody is listening any more."""


@dataclass
class Done:
    result: Any


def run_live(work: Callable[[Callable[[Any], None]], Any], interval: float = 0.25) -> Iterator[list[Any] | Done]:
    """Run `work(report)` in a thread; yield lists of the items it reported, then `Done(its result)`.

    An exception in `work` is raised here, in the caller's thread.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def report(item: Any) -> None:
        if stop.is_set():
            raise Cancelled
        events.put(("item", item))

    def target() -> None:
        try:
            events.put(("done", work(report)))
        except BaseException as error:  # handed to the caller's thread, which raises it
            events.put(("error", error))

    threading.Thread(target=target, name="muon-ad-ui-run", daemon=True).start()
    batch: list[Any] = []
    last = time.monotonic()
    try:
        while True:
            try:
                kind, value = events.get(timeout=interval)
            except queue.Empty:
                kind, value = "wait", None
            if kind == "error":
                raise value
            if kind == "item":
                batch.append(value)
            if batch and (kind == "done" or time.monotonic() - last >= interval):
                yield batch
                batch, last = [], time.monotonic()
            if kind == "done":
                yield Done(value)
                return
    finally:
        stop.set()


def _one_line(error: Exception) -> gr.Error:
    if isinstance(error, UserError):
        return gr.Error(str(error), print_exception=False)
    log.exception("web UI: unexpected error")
    first = (str(error).strip().splitlines() or [""])[0]
    return gr.Error(f"{type(error).__name__}: {first}" if first else type(error).__name__, print_exception=False)


def one_line_errors(fn: Callable) -> Callable:
    """Wrap a handler (a function or a generator function) so that its errors reach the page as one line."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:
                raise _one_line(error) from None
        return generator

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            raise _one_line(error) from None
    return function


def stamp(path: str) -> tuple[int, int] | None:
    """Changes when the folder or file at `path` is replaced; None when it does not exist (the loader says so)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


@functools.lru_cache(maxsize=1)
def _teacher(path: str, device: str, version: tuple[int, int] | None):
    from muon_ad.models.teacher import load_teacher

    return load_teacher(path, device)


@functools.lru_cache(maxsize=2)
def _student(path: str, device: str, version: tuple[int, int] | None):
    from muon_ad.runtime import load_backend

    return load_backend(path, device)


def teacher(path: str, device: str = "cpu"):
    """The teacher (or any diffusers SD folder, e.g. a text-to-image student) at `path`, loaded once."""
    path = _folder(path, "teacher folder")
    return _teacher(path, device, stamp(path))


def student(path: str, device: str = "cpu"):
    """The student backend at `path` (a student folder, or an exported ONNX model), loaded once."""
    path = _folder(path, "student")
    return _student(path, device, stamp(path))


def _folder(path: str | None, what: str) -> str:
    if not path or not str(path).strip():
        raise UserError(f"give a {what} path")
    return str(path).strip()
