import pytest
import torch

from muon_ad.optim import ConflictProjection


def test_opposite_gradients_lose_the_stated_fraction_along_each_other():
    g1, g2 = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([-1.0, 0.4, 0.0])  # cosine ≈ -0.83 < -0.5
    proj = ConflictProjection(threshold=-0.5, rate=0.7)
    (combined,) = proj.combine([[g1], [g2]])
    along = lambda a, b: (a @ b) / (b @ b) * b  # noqa: E731
    g1_kept = g1 - 0.7 * along(g1, g2)
    g2_kept = g2 - 0.7 * along(g2, g1)
    torch.testing.assert_close(combined, g1_kept + g2_kept)
    # What is left of g1's component along g2 is exactly 30% of it; the orthogonal part is untouched.
    torch.testing.assert_close(along(g1_kept, g2), 0.3 * along(g1, g2))
    torch.testing.assert_close(g1_kept - along(g1_kept, g2), g1 - along(g1, g2))
    assert proj.stats() == {"conflict_checked": 1, "conflict_acted": 1, "conflict_rate": 1.0}


def test_aligned_or_mildly_opposed_gradients_are_just_summed():
    proj = ConflictProjection()
    aligned = (torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.5]))  # cosine ≈ 0.99
    mildly_opposed = (torch.tensor([1.0, 0.0]), torch.tensor([-0.4, 1.0]))  # cosine ≈ -0.37, above -0.5
    for g1, g2 in (aligned, mildly_opposed):
        (combined,) = proj.combine([[g1], [g2]])
        assert torch.equal(combined, g1 + g2)
    assert proj.acted == 0 and proj.checked == 2


def test_per_parameter_and_global_modes_differ_as_they_should():
    # Parameter a conflicts strongly; parameter b agrees and dominates the whole-model cosine.
    style = [torch.tensor([1.0, 0.0]), torch.tensor([5.0, 5.0])]
    content = [torch.tensor([-1.0, 0.1]), torch.tensor([5.0, 4.0])]
    per_param = ConflictProjection(mode="per_parameter")
    a, b = per_param.combine([style, content])
    assert per_param.acted == 1 and not torch.equal(a, style[0] + content[0]) and torch.equal(b, style[1] + content[1])
    whole = ConflictProjection(mode="global")
    assert all(torch.equal(x, s + c) for x, s, c in zip(whole.combine([style, content]), style, content))
    assert whole.acted == 0 and whole.checked == 1


def test_backward_accumulates_combined_gradients_and_handles_unused_params():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.zeros(3, requires_grad=True)
    only_content = torch.ones(1, requires_grad=True)
    style_loss = (w * torch.tensor([1.0, 0.0])).sum()
    content_loss = (w * torch.tensor([-1.0, 0.2])).sum() + only_content.sum()
    ConflictProjection(rate=1.0).backward([style_loss, content_loss], [w, unused, only_content])
    assert unused.grad is None and torch.equal(only_content.grad, torch.ones(1))
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.2])
    expected = g1 - (g1 @ g2) / (g2 @ g2) * g2 + g2 - (g1 @ g2) / (g1 @ g1) * g1
    torch.testing.assert_close(w.grad, expected)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ConflictProjection(mode="layer")
    with pytest.raises(ValueError):
        ConflictProjection(rate=1.5)
