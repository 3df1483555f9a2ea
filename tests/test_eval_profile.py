import functools

import numpy as np
import pytest
import torch
from torch import nn

from muon_ad.eval.profile import count_flops, count_parameters, interleaved_ms, measure_latency, peak_memory_mb


def test_count_parameters_is_exact_and_can_skip_frozen_ones():
    model = nn.Sequential(nn.Linear(10, 5), nn.Conv2d(3, 4, 3))  # 10*5+5 = 55 and 4*3*3*3+4 = 112
    assert count_parameters(model) == 167
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 112


def test_flops_of_linear_and_conv_match_the_hand_count():
    # A multiply-add is 2 FLOPs; bias adds are not counted.
    assert count_flops(nn.Linear(10, 5), torch.randn(3, 10)) == 2 * 3 * 10 * 5
    conv = nn.Conv2d(3, 4, 3, padding=1)
    assert count_flops(conv, torch.randn(2, 3, 8, 8)) == 2 * (2 * 4 * 8 * 8) * (3 * 3 * 3)


def test_latency_reports_every_repeat_after_the_warmup():
    calls = []
    result = measure_latency(lambda: calls.append(1), repeats=5, warmup=2, items_per_call=4)
    assert len(calls) == 7 and len(result["repeats_ms"]) == 5
    assert result["median_ms"] > 0 and all(t > 0 for t in result["repeats_ms"])
    assert result["fps"] == pytest.approx(4 * 1000.0 / result["median_ms"])


def test_peak_rss_of_a_fresh_process_sees_a_64_mib_allocation_and_not_its_parent():
    allocate = functools.partial(np.ones, 8 * 2**20)  # 8 Mi float64 = 64 MiB, every page written
    assert peak_memory_mb(allocate, subtract_baseline=True) >= 60
    # The whole child (python + numpy + 64 MiB) is far smaller than this process, which holds torch and
    # the ballast; the child's ru_maxrss would have inherited this process's size at exec.
    ballast = torch.ones(64 * 2**20)  # 256 MiB
    assert 64 < peak_memory_mb(allocate) < 200
    del ballast


def test_interleaved_timing_runs_blocks_of_consecutive_calls_taking_turns():
    order = []
    calls = {name: (lambda n=name: order.append(n)) for name in ("a", "b")}
    times = interleaved_ms(calls, repeats=20, block=10)
    assert {name: len(t) for name, t in times.items()} == {"a": 20, "b": 20}
    # each block: one warm-up call and 10 timed ones, then the other's block; two rounds
    assert order == (["a"] * 11 + ["b"] * 11) * 2
