"""Newton–Schulz orthogonalisation: the map G = U S Vᵀ ↦ ≈ U Vᵀ at the heart of Muon.

Each step applies the odd quintic p(X) = aX + b(XXᵀ)X + c(XXᵀ)²X, which pushes every singular value
toward 1. With Keller Jordan's coefficients (3.4445, −4.7750, 2.0315) five steps leave the singular
values in roughly [0.7, 1.2]; that noise does not hurt training and buys a steep slope at zero.

Two formulations of the same polynomial, chosen per shape (X is made wide, m ≤ n, first):

* standard: X ← (aI + bA + cA²) X with A = XXᵀ, two m×m×n products per step;
* Gram: all steps run on m×m matrices (A ← PAP, Q ← PQ with P = aI + bA + cA²) and X is touched
  twice, once to form A and once for the result QX. It costs 2m²n + (4k−3)m³ against k(2m²n + m³),
  so for 5 steps it wins when n > 1.5m: feed-forward weights and flattened conv kernels (n/m up to 9).
  It is exact algebra, not an approximation.

Precision: the input is normalised in fp32 (Frobenius norm, which bounds the spectral norm by 1) before
any cast, because fp16 overflows on raw gradients. The Gram formulation needs fp32: Q grows like 1/σ on
small singular values and QX relies on cancellation that bf16 rounding destroys (measured: σ_max 2.6,
and 10⁴ on a spiked spectrum), so it is used only when the iteration runs in fp32.
`ns_dtype="auto"` is bf16 on CUDA (tensor cores) and fp32 elsewhere: CPUs without bf16 units run bf16
matmuls 7-50x slower than fp32 (measured on a 2-core AMD EPYC), so there fp32 is both faster and more accurate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Coefficients = tuple[float, float, float]

KELLER_COEFFICIENTS: Coefficients = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel et al. 2025, arXiv:2505.16932): one minimax-optimal quintic per step, for inputs whose
# singular values lie in [1e-3, 1] after normalisation; tighter than Keller's at equal cost (see the bench).
POLAR_EXPRESS_COEFFICIENTS: tuple[Coefficients, ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
NS_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_ns_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype Newton–Schulz runs in: `name` from NS_DTYPES, or "auto" (bf16 on CUDA, fp32 elsewhere)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in NS_DTYPES:
        raise ValueError(f"ns_dtype {name!r}: choose from auto, {', '.join(NS_DTYPES)}")
    return NS_DTYPES[name]


def coefficient_schedule(coefficients: Sequence[float] | Sequence[Coefficients], steps: int) -> list[Coefficients]:
    """One (a, b, c) per step from a triple (reused every step), a list of triples, or a flat list of 3·k floats.

    A schedule shorter than `steps` repeats its last triple, so Polar Express with more steps stays stable.
    """
    flat = [float(x) for c in coefficients for x in (c if isinstance(c, (tuple, list)) else (c,))]
    if not flat or len(flat) % 3:
        raise ValueError(f"ns_coefficients must hold 3 floats per step, got {len(flat)}")
    triples = [tuple(flat[i : i + 3]) for i in range(0, len(flat), 3)]
    return [triples[min(i, len(triples) - 1)] for i in range(steps)]  # type: ignore[misc]


@torch.no_grad()
def orthogonalize(
    G: Tensor,
    steps: int = 5,
    coefficients: Sequence[float] | Sequence[Coefficients] = KELLER_COEFFICIENTS,
    dtype: torch.dtype = torch.bfloat16,
    eps: float = 1e-7,
) -> Tensor:
    """Approximate the polar factor U Vᵀ of each matrix in G (..., rows, cols); returned in `dtype`.

    Autocast is switched off inside: an fp32 iteration silently downcast to bf16 would lose exactly the
    accuracy it was asked for.
    """
    if G.ndim < 2:
        raise ValueError(f"orthogonalize needs matrices (..., rows, cols), got shape {tuple(G.shape)}")
    if steps < 1:
        raise ValueError(f"ns_steps must be >= 1, got {steps}")
    schedule = coefficient_schedule(coefficients, steps)
    with torch.autocast(G.device.type, enabled=False):
        X = G.reshape(-1, *G.shape[-2:]).float()
        tall = X.size(-2) > X.size(-1)
        if tall:
            X = X.mT
        X = (X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)).to(dtype)
        m, n = X.shape[-2:]
        gram = dtype == torch.float32 and 2 * n > 3 * m
        X = _gram_steps(X, schedule) if gram else _standard_steps(X, schedule)
        return (X.mT if tall else X).reshape(G.shape)


def _standard_steps(X: Tensor, schedule: list[Coefficients]) -> Tensor:
    for a, b, c in schedule:
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    return X


def _gram_steps(X: Tensor, schedule: list[Coefficients]) -> Tensor:
    # X_k = Q_k X_0 and A_k = X_k X_kᵀ; one step X ← P X gives Q ← P Q and A ← P A Pᵀ (P is symmetric).
    A = X @ X.mT
    Q = None
    for i, (a, b, c) in enumerate(schedule):
        P = torch.baddbmm(A, A, A, beta=b, alpha=c)
        P.diagonal(dim1=-2, dim2=-1).add_(a)
        Q = P if Q is None else P @ Q
        if i < len(schedule) - 1:
            A = P @ A @ P
    return Q @ X
