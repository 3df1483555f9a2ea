"""`muon-ad bench muon-step`: one optimizer step of the project's Muon vs torch.optim.Muon, and AdamW.

Parameter set: an SD-style UNet at reduced depth. Widths (b, 2b, 4b) (SD: b = 320); one transformer
block at each of the first two levels (attention, cross-attention to a 2.4b-wide context, GEGLU
feed-forward, linear proj in/out), one ResNet block per level, and the time embedding. The 2-D weights
(29 matrices) are what torch.optim.Muon accepts; the full set adds the 3×3 conv kernels (Muon) and
conv_in, conv_out and the 1-D parameters (AdamW).

On a CPU the set is scaled down (b = 64, quick b = 32): torch.optim.Muon hard-codes bf16, whose matmuls
run at ~1 GFLOP/s on CPUs without bf16 units, so one of its steps at b = 320 takes minutes there.
(The project's Muon runs fp32 on CPU, `ns_dtype="auto"`; `step_ms_bf16` is it forced to bf16.)

Gradients have a power-law spectrum (σ_k ∝ 1/k), like real ones. orth_error is the mean over matrices
of ‖OOᵀ − I‖_F/√min(rows, cols) for the orthogonalised update O read back from one step. The fp32
iteration matches the exact (float64) polynomial to 1e-6; torch's bf16 one lands ~0.3% lower because
rounding noise lifts the smallest singular values, not because it orthogonalises better. All timed
variants run interleaved, one call each per round (three for the fast ones, whose single calls are most
at the mercy of other processes), and the figures are medians, so load from other processes hits all alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from muon_ad.bench.common import BenchOutput, median, time_ms
from muon_ad.optim.muon import Muon, adjusted_lr, matrix_shape
from muon_ad.optim.newton_schulz import POLAR_EXPRESS_COEFFICIENTS

LR = 0.02


def unet_shapes(base: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[tuple[int, ...]]]:
    """(2-D weights, hidden 3×3 conv kernels, AdamW tensors: conv_in, conv_out and 1-D) of the set above."""
    time_dim, context = 4 * base, round(2.4 * base)
    matrices: list[tuple[int, ...]] = [(time_dim, base), (time_dim, time_dim)]
    convs: list[tuple[int, ...]] = []
    vectors: list[tuple[int, ...]] = [(base, 4, 3, 3), (4, base, 3, 3), (time_dim,), (time_dim,), (base,), (4,)]
    for level, width in enumerate((base, 2 * base, 4 * base)):
        matrices.append((width, time_dim))  # ResNet time-embedding projection
        convs += [(width, width, 3, 3)] * 2
        vectors += [(width,)] * 7  # two GroupNorms (weight, bias), conv and projection biases
        if level < 2:
            attention = [(width, width)] * 6 + [(width, context)] * 2  # q, k, v, out; cross q, out; cross k, v
            matrices += attention + [(8 * width, width), (width, 4 * width), (width, width), (width, width)]
            vectors += [(width,)] * 12  # three LayerNorms, biases of out, ff and proj
    return matrices, convs, vectors


def _tensors(shapes: list[tuple[int, ...]], device: str, generator: torch.Generator) -> list[Tensor]:
    return [torch.randn(s, generator=generator).mul_(0.02).to(device) for s in shapes]


def _gradient(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    if len(shape) < 2:
        return torch.randn(shape, generator=generator)
    rows, cols = shape[0], math.prod(shape[1:])
    rank = min(rows, cols)
    spectrum = 1.0 / torch.arange(1, rank + 1)
    left = torch.randn(rows, rank, generator=generator) * spectrum
    return (left @ torch.randn(rank, cols, generator=generator) / math.sqrt(cols)).reshape(shape)


def _params(values: list[Tensor], grads: list[Tensor]) -> list[nn.Parameter]:
    params = [nn.Parameter(v.clone()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return params


def _orth_error(update: Tensor) -> float:
    o = update.reshape(update.shape[0], -1).double()
    o = o if o.shape[0] <= o.shape[1] else o.T
    eye = torch.eye(o.shape[0], dtype=o.dtype, device=o.device)
    return float((o @ o.T - eye).norm() / math.sqrt(o.shape[0]))


def _one_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> list[Tensor]:
    """The update (p_after − p_before) of one step of a fresh optimizer."""
    before = [p.detach().clone() for p in params]
    optimizer.step()
    return [p.detach() - b for p, b in zip(params, before)]


def run(quick: bool, device: str) -> BenchOutput:
    cuda = device.startswith("cuda")
    base = 320 if cuda else (32 if quick else 64)
    rounds = 3 if quick else 5
    generator = torch.Generator().manual_seed(0)
    matrices, convs, vectors = unet_shapes(base)
    values = _tensors(matrices + convs + vectors, device, generator)
    grads = [_gradient(s, generator).to(device) for s in matrices + convs + vectors]
    n2d, nconv = len(matrices), len(convs)

    def muon_2d(**kwargs) -> tuple[Muon, list[nn.Parameter]]:
        params = _params(values[:n2d], grads[:n2d])
        return Muon(params, lr=LR, **kwargs), params

    # Accuracy: one step of fresh optimizers from identical parameters and gradients.
    ours, ours_params = muon_2d()
    ours_bf16, bf16_params = muon_2d(ns_dtype="bfloat16")
    polar, polar_params = muon_2d(ns_coefficients=POLAR_EXPRESS_COEFFICIENTS)
    torch_params = _params(values[:n2d], grads[:n2d])
    reference = torch.optim.Muon(torch_params, lr=LR, weight_decay=0.0, adjust_lr_fn="original")
    updates = {name: _one_step(opt, params) for name, opt, params in (
        ("ours", ours, ours_params), ("ours_bf16", ours_bf16, bf16_params), ("polar", polar, polar_params),
        ("torch", reference, torch_params))}
    scales = [adjusted_lr(LR, "original", *matrix_shape(v)) for v in values[:n2d]]
    orth = {name: sum(_orth_error(u / s) for u, s in zip(us, scales)) / n2d for name, us in updates.items()}
    diff = {other: max(float((a - b).abs().max()) for a, b in zip(updates["ours"], updates[other]))
            for other in ("torch", "ours_bf16")}

    full_params = _params(values, grads)
    full = Muon([{"params": full_params[: n2d + nconv]},
                 {"params": full_params[n2d + nconv :], "use_muon": False, "lr": 1e-3, "weight_decay": 0.01}], lr=LR)
    adamw = torch.optim.AdamW(_params(values, grads), lr=1e-3, foreach=True)

    # name: (step, calls per round); the bf16 variants take seconds per call on a CPU.
    timed = {"step_ms": (ours.step, 3), "step_ms_bf16": (ours_bf16.step, 1), "torch_muon_step_ms": (reference.step, 1),
             "full_step_ms": (full.step, 3), "adamw_step_ms": (adamw.step, 3)}
    for fn in (full.step, adamw.step):  # first-call allocations; the 2-D variants were warmed up above
        fn()
    repeats: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(rounds):
        for name, (fn, calls) in timed.items():
            repeats[name] += time_ms(fn, repeats=calls, warmup=0, device=device)
    ms = {name: median(times) for name, times in repeats.items()}

    metrics = {
        "step_ms": ms["step_ms"],
        "torch_muon_step_ms": ms["torch_muon_step_ms"],
        "ratio_vs_torch_muon": ms["step_ms"] / ms["torch_muon_step_ms"],
        "max_abs_diff_vs_torch_muon": diff["torch"],
        "max_abs_diff_bf16_vs_fp32": diff["ours_bf16"],  # what bf16 rounding alone moves: the scale of the above
        "max_abs_update_torch_muon": max(float(u.abs().max()) for u in updates["torch"]),
        "orth_error": orth["ours"],
        "torch_orth_error": orth["torch"],
        "step_ms_bf16": ms["step_ms_bf16"],
        "ratio_bf16_vs_torch_muon": ms["step_ms_bf16"] / ms["torch_muon_step_ms"],
        "orth_error_bf16": orth["ours_bf16"],
        "orth_error_polar_express": orth["polar"],
        "full_step_ms": ms["full_step_ms"],
        "adamw_step_ms": ms["adamw_step_ms"],
    }
    config = {
        "base_width": base, "widths": [base, 2 * base, 4 * base], "matrices": n2d, "conv_kernels": nconv,
        "params_2d": sum(values[i].numel() for i in range(n2d)), "params_full": sum(v.numel() for v in values),
        "lr": LR, "adjust_lr": "original", "ns_steps": 5, "ns_dtype": "auto", "rounds": rounds,
        "threads": torch.get_num_threads(),
    }
    baseline = ("torch.optim.Muon (bf16 Newton-Schulz, 5 Keller steps, one matrix at a time) on the same 2-D "
                "parameters and gradients; AdamW (foreach) on the full set for reference")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline, repeats=repeats)
