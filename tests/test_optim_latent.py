import pytest
import torch

from muon_ad.optim import LatentMuon
from muon_ad.optim.latent import latent_matrices


@pytest.mark.parametrize("layout, matrix", [("channels", (2, 4, 48)), ("spatial", (8, 6, 8))])
def test_update_is_orthogonal_in_the_chosen_layout_with_adam_sized_rms(layout, matrix):
    latent = torch.randn(2, 4, 6, 8, requires_grad=True)
    start = latent.detach().clone()
    latent.grad = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    LatentMuon([latent], lr=0.05, layout=layout, ns_dtype="float32").step()
    update = (start - latent.detach()) / 0.05
    assert latent_matrices(update, layout).shape == matrix
    s = torch.linalg.svdvals(latent_matrices(update, layout).double() / max(matrix[1:]) ** 0.5)
    assert s.min() > 0.6 and s.max() < 1.3  # orthogonal per sample (channels) or per channel map (spatial)
    assert 0.6 < update.square().mean().sqrt() < 1.3  # RMS ≈ lr, the size of Adam's first steps


def test_latent_muon_descends_a_quadratic():
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latent = torch.zeros(1, 4, 8, 8, requires_grad=True)
    opt = LatentMuon([latent], lr=0.05, ns_dtype="float32")
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (latent - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_rejects_unknown_layouts_and_shapes():
    with pytest.raises(ValueError):
        LatentMuon([torch.zeros(1, 4, 8, 8, requires_grad=True)], layout="rows")
    with pytest.raises(ValueError):
        latent_matrices(torch.zeros(4, 8, 8, 2, 2), "spatial")
