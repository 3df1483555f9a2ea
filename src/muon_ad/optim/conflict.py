"""Gradient-conflict projection between objectives (style/distillation vs content), PCGrad-style.

When two objectives' gradients point against each other (cosine below `threshold`, default −0.5), each
loses a fraction `rate` (default 0.7) of its component along the other before they are summed, so
neither objective's progress is cancelled by the other's. Projections use the original gradients, so
the result does not depend on the order of the objectives (PCGrad's random order is not needed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

MODES = ("per_parameter", "global")


class ConflictProjection:
    """Combine per-objective gradients, removing `rate` of each conflicting component.

    mode "per_parameter" tests and projects each parameter tensor on its own; "global" treats the
    whole model's gradient as one vector. `checked` and `acted` count objective pairs tested and
    projected, for the logs (`stats()`).
    """

    def __init__(self, threshold: float = -0.5, rate: float = 0.7, mode: str = "per_parameter") -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: choose from {', '.join(MODES)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.threshold, self.rate, self.mode = threshold, rate, mode
        self.checked = self.acted = 0

    def combine(self, grads: Sequence[Sequence[Tensor | None]]) -> list[Tensor | None]:
        """grads[i][k] is objective i's gradient for parameter k (None: does not depend on it); returns
        the combined gradient for each parameter (None where no objective depends on it)."""
        out: list[Tensor | None] = [None] * len(grads[0])
        present = [k for k in range(len(out)) if any(g[k] is not None for g in grads)]
        for unit in [[k] for k in present] if self.mode == "per_parameter" else [present]:
            like = {k: next(g[k] for g in grads if g[k] is not None) for k in unit}
            # An objective that does not depend on a parameter has a zero gradient there.
            vectors = [[torch.zeros_like(like[k]) if g[k] is None else g[k] for k in unit] for g in grads]
            for k, combined in zip(unit, self._project(vectors)):
                out[k] = combined
        return out

    def backward(self, losses: Sequence[Tensor], params: Sequence[Tensor],
                 reduce: Callable[[Sequence[Tensor | None]], Sequence[Tensor | None]] | None = None) -> None:
        """Backpropagate each loss separately, combine, and accumulate the result into `p.grad`.

        `reduce` maps each objective's gradients before they are combined: on several processes, their mean over
        the ranks, so the projection acts on the global batch's gradients, as one process would."""
        grads = [
            torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
            for i, loss in enumerate(losses)
        ]
        if reduce is not None:
            grads = [reduce(g) for g in grads]
        for p, g in zip(params, self.combine(grads)):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g

    def stats(self) -> dict[str, float]:
        return {"conflict_checked": self.checked, "conflict_acted": self.acted,
                "conflict_rate": self.acted / self.checked if self.checked else 0.0}

    def _project(self, vectors: list[list[Tensor]]) -> list[Tensor]:
        """vectors[i]: objective i as a list of tensors (one unit); returns the combined tensors."""
        n = len(vectors)
        dot = torch.tensor([[sum(float((a * b).sum(dtype=torch.float32)) for a, b in zip(u, v)) for v in vectors]
                            for u in vectors], dtype=torch.float64)
        norms = dot.diagonal().sqrt()
        combined = [t.clone() for t in vectors[0]]
        for i in range(1, n):
            torch._foreach_add_(combined, vectors[i])
        for i in range(n):
            for j in range(i + 1, n):
                self.checked += 1
                if norms[i] == 0 or norms[j] == 0 or dot[i, j] >= self.threshold * norms[i] * norms[j]:
                    continue
                self.acted += 1
                # g_i -= rate·(g_i·g_j/|g_j|²)·g_j and symmetrically; both terms are multiples of g_j or g_i.
                torch._foreach_add_(combined, vectors[j], alpha=float(-self.rate * dot[i, j] / dot[j, j]))
                torch._foreach_add_(combined, vectors[i], alpha=float(-self.rate * dot[i, j] / dot[i, i]))
        return combined
