"""The parts of a training loop every recipe shares: its progress bar, and saving a checkpoint on Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

log = logging.getLogger("muon_ad.training")


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)


@contextlib.contextmanager
def saves_on_interrupt(save: Callable[[], None], step: Callable[[], int]) -> Iterator[None]:
    """Ctrl-C inside the block saves a checkpoint (`save`), says at which `step()` and how to resume, and re-raises."""
    try:
        yield
    except KeyboardInterrupt:
        save()
        log.warning("interrupted at step %d: checkpoint saved; run the same command to resume", step())
        raise
