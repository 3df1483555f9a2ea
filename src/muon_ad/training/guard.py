"""Non-finite losses and gradients: a step that meets one is skipped, and a run that keeps meeting them stops.

An absurd learning rate makes the loss NaN within a step or two, after which every update would write NaN
into the weights; training on, saving them, and exiting 0 hides that. A single bad batch is tolerated.
"""

from __future__ import annotations

import math

from muon_ad.errors import UserError


def all_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


class NonFiniteGuard:
    """Counts skipped steps; `limit` in a row stop the run with one line naming the step, the likely `cause` and
    what was kept (`kept`)."""

    def __init__(self, limit: int, cause: str, kept: str = "the last good checkpoint is kept"):
        if limit < 1:
            raise UserError(f"max_nonfinite_steps must be at least 1, got {limit}")
        self.limit, self.cause, self.kept = limit, cause, kept
        self.in_row = self.skipped = 0

    def observe(self, step: int, finite: bool) -> None:
        """Record whether `step`'s loss and gradient were finite (the step was skipped when not)."""
        self.in_row = 0 if finite else self.in_row + 1
        self.skipped += not finite
        if self.in_row >= self.limit:
            raise UserError(f"step {step}: loss or gradient not finite for {self.in_row} steps in a row "
                            f"(likely cause: {self.cause}); stopped, {self.kept}")

    def state_dict(self) -> dict[str, int]:
        return {"in_row": self.in_row, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.in_row, self.skipped = int(state["in_row"]), int(state["skipped"])
