import copy
import logging

import pytest
import torch
from torch import nn

from muon_ad.optim import Muon, orthogonalize
from muon_ad.optim.muon import adjusted_lr

SHAPES = [(24, 24), (16, 48), (40, 12), (24, 24)]  # square, wide and tall (Gram path), a repeated shape (batched)


def _params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in shapes]


def _set_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def _torch_step_in_fp32(optimizer, monkeypatch):
    # torch.optim.Muon hard-codes `grad.bfloat16()`; running its exact code in fp32 compares the algorithms.
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "bfloat16", lambda self, memory_format=None: self.float())
        optimizer.step()


@pytest.mark.parametrize("adjust_lr", ["original", "match_rms_adamw"])
def test_equals_torch_muon_for_five_steps(adjust_lr, monkeypatch):
    ours, theirs = _params(SHAPES), _params(SHAPES)
    opt = Muon(ours, lr=0.02, weight_decay=0.1, adjust_lr=adjust_lr, ns_dtype="float32")
    ref = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust_lr)
    for step in range(5):
        _set_grads(ours, step), _set_grads(theirs, step)
        opt.step()
        _torch_step_in_fp32(ref, monkeypatch)
    moved = max((p - q).abs().max() for p, q in zip(ours, _params(SHAPES)))
    assert moved > 1e-2  # the comparison is not vacuous
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(8, 6, 3, 3), (32, 2, 2, 2)])  # a wide and a tall flattened kernel
def test_conv_kernel_gets_the_orthogonalised_flattened_update(shape):
    (weight,) = _params([shape])
    before = weight.detach().clone()
    weight.grad = torch.randn(shape)
    Muon([weight], lr=0.02, nesterov=False, ns_dtype="float32").step()
    assert weight.shape == shape
    rows, cols = shape[0], weight[0].numel()
    expected = orthogonalize(weight.grad.reshape(rows, cols), dtype=torch.float32).reshape(shape)
    torch.testing.assert_close(before - weight, adjusted_lr(0.02, "original", rows, cols) * expected)


def test_torch_muon_rejects_conv_kernels_and_ours_rejects_vectors():
    with pytest.raises(ValueError):
        torch.optim.Muon([nn.Parameter(torch.zeros(4, 2, 3, 3))])
    with pytest.raises(ValueError, match="AdamW group"):
        Muon([nn.Parameter(torch.zeros(4))])


def test_masked_entries_stay_exactly_zero():
    conv, lin, bias = _params([(8, 4, 3, 3), (12, 12), (12,)])
    opt = Muon([{"params": [conv, lin]}, {"params": [bias], "use_muon": False, "lr": 1e-2}], ns_dtype="float32")
    g = torch.Generator().manual_seed(5)
    masks = {p: (torch.rand(p.shape, generator=g) > 0.4).float() for p in (conv, lin, bias)}
    for p, m in masks.items():
        opt.set_mask(p, m)
    for step in range(3):
        _set_grads([conv, lin, bias], step)
        opt.step()
    for p, m in masks.items():
        assert torch.all(p[m == 0] == 0) and torch.all(p[m == 1] != 0)


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    muon = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = Muon([{"params": muon}, {"params": other, "use_muon": False, "lr": 1e-3}], weight_decay=0.01,
               ns_dtype="float32")
    return model, opt


def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 10, (4,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_state_dict_round_trip_continues_identically():
    model, opt = _model_and_opt()
    _train(model, opt, 3, seed=1)
    resumed_model, resumed_opt = _model_and_opt(seed=99)
    resumed_model.load_state_dict(model.state_dict())
    resumed_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    _train(model, opt, 2, seed=2)
    _train(resumed_model, resumed_opt, 2, seed=2)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_adamw_groups_equal_torch_adamw():
    ours, theirs = _params([(7,), (3, 5)]), _params([(7,), (3, 5)])
    opt = Muon([{"params": ours, "use_muon": False, "lr": 3e-3, "weight_decay": 0.1, "betas": (0.8, 0.99)}])
    ref = torch.optim.AdamW(theirs, lr=3e-3, weight_decay=0.1, betas=(0.8, 0.99))
    for step in range(3):
        _set_grads(ours, step), _set_grads(theirs, step)
        opt.step(), ref.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q)


def test_step_under_autocast_is_unchanged():
    outside, inside = _params(SHAPES), _params(SHAPES)
    _set_grads(outside, 0), _set_grads(inside, 0)
    Muon(outside, ns_dtype="float32").step()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # would run the fp32 iteration in bf16 if not switched off
        Muon(inside, ns_dtype="float32").step()
    for a, b in zip(outside, inside):
        assert torch.equal(a, b)


def test_bf16_params_get_the_fp32_update():
    (ref,) = _params([(16, 40)])
    ref.data.mul_(0.1)  # small weights: bf16 rounding of the weight stays far below the update
    low = nn.Parameter(ref.detach().bfloat16())
    start = low.detach().float()
    _set_grads([ref], 0), _set_grads([low], 0)
    Muon([ref], ns_dtype="float32").step()
    Muon([low], ns_dtype="float32").step()
    assert low.dtype == torch.bfloat16
    ref_delta, low_delta = ref.detach() - start, low.detach().float() - start
    assert (low_delta - ref_delta).abs().max() < 0.05 * ref_delta.abs().max()


def test_grad_scaler_steps_on_unscaled_gradients():
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**14)):
        model, opt = _model_and_opt()
        x, y = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 2, 3, 4])
        loss = nn.functional.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_warns_when_given_an_adamw_learning_rate(caplog):
    with caplog.at_level(logging.WARNING, logger="muon_ad.optim"):
        Muon(_params([(4, 4)]), lr=1e-3)
    assert "looks like an AdamW lr" in caplog.text
