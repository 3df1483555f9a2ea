import math

import pytest
import torch

from muon_ad.attention import (
    ad_loss,
    attention_kl,
    content_loss,
    feature_distillation,
    output_distillation,
    resize_attention_maps,
    token_grid,
)


def t(rows):
    """(1 batch, 1 head, tokens, dim) from nested lists."""
    return torch.tensor(rows, dtype=torch.float64)[None, None]


# 1 head, 2 tokens, dim 2; SDPA scale 1/sqrt(2).
# q1 . k1 / sqrt(2) = ln 3, q1 . k2 = 0 -> weights (3/4, 1/4) -> target1 = (3, 2)
# q2 = 0 -> weights (1/2, 1/2) -> target2 = (2, 4)
Q = [[math.sqrt(2) * math.log(3), 0.0], [0.0, 0.0]]
K_REF, V_REF = [[1.0, 0.0], [0.0, 0.0]], [[4.0, 0.0], [0.0, 8.0]]
OUT = [[3.0, 3.0], [2.0, 2.0]]  # |out - target| = (0, 1), (0, 2)


def image(out=OUT):
    return {"l": {"q": t(Q).requires_grad_(), "out": t(out).requires_grad_()}}


def test_ad_loss_hand_case_and_target_is_constant():
    records = image()
    ref = {"l": {"k": t(K_REF).requires_grad_(), "v": t(V_REF).requires_grad_()}}
    loss = ad_loss(records, ref)
    assert loss.item() == pytest.approx(0.75)
    loss.backward()
    assert records["l"]["q"].grad is None and ref["l"]["k"].grad is None and ref["l"]["v"].grad is None
    # d/d out of mean |out - target| = sign(out - target) / 4, away from the zero differences
    torch.testing.assert_close(records["l"]["out"].grad[0, 0, :, 1], torch.tensor([0.25, -0.25]).double())


def test_ad_loss_concatenates_references_and_sums_layers():
    refs = [{"l": {"k": t(K_REF[:1]), "v": t(V_REF[:1])}}, {"l": {"k": t(K_REF[1:]), "v": t(V_REF[1:])}}]
    assert ad_loss(image(), refs).item() == pytest.approx(0.75)
    two_layers = {**image(), "m": image()["l"]}
    ref = {name: {"k": t(K_REF), "v": t(V_REF)} for name in ("l", "m")}
    assert ad_loss(two_layers, ref).item() == pytest.approx(1.5)
    assert ad_loss(two_layers, ref, layers=["m"]).item() == pytest.approx(0.75)


def test_ad_loss_per_image_references():
    records = {"l": {"q": torch.cat([t(Q)] * 2), "out": torch.cat([t(OUT)] * 2)}}
    refs = {"l": {"k": torch.cat([t(K_REF), t(K_REF)]), "v": torch.cat([t(V_REF), t(V_REF) + 1])}}
    # image 2's targets are 1 higher, (4, 3) and (3, 5): |diffs| 1, 0, 1, 3; mean over both images
    assert ad_loss(records, refs).item() == pytest.approx((1 + 2 + 1 + 0 + 1 + 3) / 8)
    with pytest.raises(ValueError, match="reference batch"):
        ad_loss(records, {"l": {"k": t(K_REF).repeat(3, 1, 1, 1), "v": t(V_REF).repeat(3, 1, 1, 1)}})


def test_ad_loss_masks_restrict_keys_and_queries():
    ref = {"l": {"k": t(K_REF), "v": t(V_REF)}}
    same = torch.tensor([[0, 1]])  # 1x2 token grid: each query may only attend its own key
    # targets (4, 0), (0, 8): |diffs| 1, 3, 2, 6
    assert ad_loss(image(), ref, masks=(same, same)).item() == pytest.approx(3.0)
    # image labels at a finer 2x4 resolution are nearest-resized; label -1: query 2 gets no loss
    fine = torch.tensor([[0, 0, -1, -1], [0, 0, -1, -1]])
    assert ad_loss(image(), ref, masks=(fine, same)).item() == pytest.approx(2.0)
    # ref token 2 labelled -1 is never attended: both queries re-aggregate only (4, 0): |diffs| 1, 3, 2, 2
    assert ad_loss(image(), ref, masks=(torch.tensor([[0, 0]]), torch.tensor([[0, -1]]))).item() == pytest.approx(2)
    # label -1 never matches, not even -1: query 2 gets no loss, query 1 takes (4, 0): |diffs| 1, 3
    assert ad_loss(image(), ref, masks=(torch.tensor([[0, -1]]), torch.tensor([[0, -1]]))).item() == pytest.approx(2)
    # one label map per reference when several references are concatenated
    refs = [{"l": {"k": t(K_REF[:1]), "v": t(V_REF[:1])}}, {"l": {"k": t(K_REF[1:]), "v": t(V_REF[1:])}}]
    masks = (same, [torch.tensor([[0]]), torch.tensor([[1]])])
    assert ad_loss(image(), refs, masks=masks).item() == pytest.approx(3.0)


def test_content_loss_hand_case():
    records = {"l": {"q": t([[1.0, 2.0], [3.0, 4.0]]).requires_grad_()}, "m": {"q": t([[0.0, 0.0], [0.0, 0.0]])}}
    content = {"l": {"q": t([[1.0, 0.0], [0.0, 4.0]])}, "m": {"q": t([[1.0, 1.0], [1.0, 1.0]])}}
    loss = content_loss(records, content)  # (0 + 2 + 3 + 0) / 4 + 1
    assert loss.item() == pytest.approx(2.25)
    loss.backward()
    assert records["l"]["q"].grad.abs().sum() > 0


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_attention_kl_hand_cases():
    teacher, student = torch.tensor([[[0.5, 0.5]]]), torch.tensor([[[0.25, 0.75]]])
    assert attention_kl(student, teacher).item() == pytest.approx(kl([0.5, 0.5], [0.25, 0.75]), rel=1e-5)
    z = math.sqrt(0.25) + math.sqrt(0.75)  # temperature 2: p -> p^(1/2), renormalised; times T^2
    expected = 4 * kl([0.5, 0.5], [math.sqrt(0.25) / z, math.sqrt(0.75) / z])
    assert attention_kl(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)
    heads_t = torch.tensor([[[[0.5, 0.5]], [[0.9, 0.1]]]])  # (B, heads, Nq, Nk)
    heads_s = torch.tensor([[[[0.25, 0.75]], [[0.5, 0.5]]]])
    kl0, kl1 = kl([0.5, 0.5], [0.25, 0.75]), kl([0.9, 0.1], [0.5, 0.5])
    assert attention_kl(heads_s, heads_t, head_mask=torch.tensor([1.0, 0.0])).item() == pytest.approx(kl0, rel=1e-5)
    assert attention_kl(heads_s, heads_t).item() == pytest.approx((kl0 + kl1) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="per-head"):
        attention_kl(student, teacher, head_mask=torch.ones(1))


def test_attention_kl_resizes_teacher_on_the_token_grid():
    # teacher on a 4x4 grid: each query attends uniformly to its own 2x2 cell; area-pooled to 2x2 that
    # is the identity, so against a student with 0.7 on the diagonal the KL is -ln 0.7 per row
    cell = torch.tensor([(i // 4 // 2) * 2 + (i % 4) // 2 for i in range(16)])
    teacher = (cell[:, None] == cell[None, :]).float()[None] / 4
    student = (torch.eye(4) * 0.6 + 0.1)[None]
    assert attention_kl(student, teacher).item() == pytest.approx(-math.log(0.7), rel=1e-5)
    uniform = torch.full((1, 16, 16), 1 / 16)  # upsampling (bilinear) keeps a uniform teacher uniform
    assert attention_kl(uniform, torch.full((1, 4, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="head counts"):
        attention_kl(torch.full((1, 2, 4, 4), 0.25), torch.full((1, 3, 4, 4), 0.25))


def test_resize_attention_maps_area_pools_both_token_grids():
    torch.manual_seed(1)
    maps = torch.rand(2, 16, 16)  # 4x4 query grid x 4x4 key grid, row-major tokens

    def pool_keys(x):  # key index = row * 4 + col -> mean over each 2x2 cell
        return x.reshape(*x.shape[:-1], 2, 2, 2, 2).mean(dim=(-3, -1)).flatten(-2)

    expected = pool_keys(pool_keys(maps).transpose(-1, -2)).transpose(-1, -2)
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(resize_attention_maps(maps, 4, 4), expected)


def test_attention_kl_gradcheck():
    torch.manual_seed(0)
    teacher = torch.randn(1, 2, 2, 2).softmax(-1).double()
    logits = torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: attention_kl(x.softmax(-1), teacher, 1.5), logits)


def test_feature_and_output_distillation_hand_cases():
    s1, t1 = torch.tensor([[3.0, 4.0]], requires_grad=True), torch.tensor([[0.0, 2.0]])
    s2, t2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    loss = feature_distillation([s1, s2], [t1, t2])  # ((9 + 4) / 4 + 1 / 1) / 2
    assert loss.item() == pytest.approx(2.125)
    loss.backward()
    torch.testing.assert_close(s1.grad, torch.tensor([[6.0, 4.0]]) / 4 / 2)  # 2 (s - t) / ||t||^2 / layers
    out = torch.tensor([1.0, 2.0], requires_grad=True)
    assert output_distillation(out, torch.zeros(2)).item() == pytest.approx(2.5)


def test_token_grid():
    assert token_grid(4096) == (64, 64)
    assert token_grid(2, 0.5) == (1, 2)
    assert token_grid(96 * 64, 1.5) == (96, 64)
    with pytest.raises(ValueError, match="grid"):
        token_grid(77)
