"""Optimisation-based AD on a tiny random teacher: the loop lowers the loss, sizes, tiling, masks."""

import numpy as np
import pytest
import torch
from PIL import Image

from muon_ad.data.procedural import make_scene, make_texture
from muon_ad.errors import UserError
from muon_ad.models.teacher import build_tiny_teacher
from muon_ad.synthesis import ADObjective, circular_padding, default_ad_layers, optimize_latent, stylize, texture
from muon_ad.synthesis.transfer import label_maps
from tiny import TINY_TEACHER


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_tiny_teacher(TINY_TEACHER, ["a"]).freeze()


def pil(array):
    return Image.fromarray(array)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return pil(make_scene(48, rng)[0]), pil(make_texture("stripes", "red_white", 40, rng))


def test_default_layers_are_the_decoders_two_finest_levels(teacher):
    # The tiny UNet's decoder has 2 levels x 2 self-attention layers (SD-1.5's rule gives its last 6 of 16).
    assert default_ad_layers(teacher.unet) == [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (0, 1) for a in (0, 1)]


@pytest.mark.parametrize("optimizer", ["adam", "muon"])
def test_loop_lowers_the_ad_loss_at_a_fixed_timestep(teacher, optimizer):
    torch.manual_seed(1)
    style = torch.randn(1, 4, 16, 16)
    objective = ADObjective(teacher, style, cache=True)
    start = torch.randn(1, 4, 16, 16)
    latent, history = optimize_latent(objective, start, [400] * 8, optimizer, progress=False)
    with torch.no_grad():
        before, after = objective(start, 400)["loss"].item(), objective(latent, 400)["loss"].item()
    assert len(history) == 8 and history[0]["loss"] == pytest.approx(before, rel=1e-4)
    assert after < 0.8 * before, (optimizer, before, after)


def test_stylize_odd_sizes_are_resized_to_the_teachers_multiple(teacher, images):
    content, style = images[0].resize((37, 53)), images[1].resize((40, 23))
    result = stylize(teacher, content, style, steps=2, progress=False)
    # short side 37 -> 32 (teacher size), 53 -> 45.8 -> 44 (nearest multiple of 2 x 2), aspect kept
    assert result.image.shape == (3, 44, 32) and result.latent.shape == (1, 4, 22, 16)
    assert torch.isfinite(result.image).all() and result.image.min() >= -1 and result.image.max() <= 1
    assert [row["step"] for row in result.history] == [0, 1]
    assert result.history[0]["timestep"] > result.history[1]["timestep"]  # DDIM order: high to low
    assert result.history[0]["content"] == 0  # starts at the content latent


def test_texture_size_must_fit_the_teacher(teacher, images):
    with pytest.raises(UserError, match="multiples of 4"):
        texture(teacher, images[1], size=(30, 32), steps=1, progress=False)
    result = texture(teacher, images[1], size=(24, 40), steps=1, progress=False)
    assert result.image.shape == (3, 24, 40)


def edge_gap(image):
    """Mean |left column - right column| over mean |column i - column i+1| across latent-pixel borders."""
    f = 2  # the tiny VAE's factor: columns f*k-1 and f*k lie in different latent pixels, as 0 and W-1 do
    gaps = (image[:, :, f::f] - image[:, :, f - 1 : -1 : f]).abs().mean()
    return ((image[:, :, 0] - image[:, :, -1]).abs().mean() / gaps).item()


def test_tile_makes_left_and_right_edges_neighbours(teacher, images):
    tiled = texture(teacher, images[1], size=(32, 32), steps=3, tile=True, seed=3, progress=False).image
    assert edge_gap(tiled) < 1.25  # the wrap-around seam is no worse than any neighbouring pair


@pytest.mark.parametrize("tile", [True, False])
def test_circular_padding_makes_unet_and_decoder_shift_equivariant(teacher, tile):
    # What makes tiles seamless: with circular padding, shifting the latent just shifts the noise prediction
    # and the image, so the border is like any other place. With zero padding the borders are special.
    z, embeds = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), teacher.encode_prompts([""])
    shifted = z.roll(6, dims=-1)  # 6 latent pixels: a multiple of the UNet's downsampling (2)
    with torch.no_grad(), circular_padding(teacher.unet, teacher.vae.decoder, enabled=tile):
        eps, eps_shifted = (teacher.unet(x, 500, embeds).sample for x in (z, shifted))
        image, image_shifted = (teacher.decode_latents(x) for x in (z, shifted))
    equivariant = torch.allclose(eps_shifted, eps.roll(6, dims=-1), atol=1e-4) and torch.allclose(
        image_shifted, image.roll(6 * teacher.vae_scale_factor, dims=-1), atol=1e-4)
    assert equivariant == tile


def test_circular_padding_is_restored_even_on_error(teacher):
    modes = {m.padding_mode for m in teacher.unet.modules() if isinstance(m, torch.nn.Conv2d)}
    with pytest.raises(RuntimeError), circular_padding(teacher.unet):
        assert {m.padding_mode for m in teacher.unet.modules() if isinstance(m, torch.nn.Conv2d)} == {"circular"}
        raise RuntimeError
    assert {m.padding_mode for m in teacher.unet.modules() if isinstance(m, torch.nn.Conv2d)} == modes == {"zeros"}


def test_masks_share_labels_by_colour_and_restrict_the_loss(teacher, images):
    red, blue = np.array([255, 0, 0], np.uint8), np.array([0, 0, 255], np.uint8)
    content_mask = np.broadcast_to(red, (16, 16, 3)).copy()
    content_mask[:, 8:] = blue
    style_mask = np.broadcast_to(blue, (10, 20, 3)).copy()
    style_mask[:5] = red
    labels = label_maps((pil(content_mask), pil(style_mask)), ((32, 32), (40, 20)))
    assert labels[0].shape == (32, 32) and labels[1].shape == (20, 40)
    assert labels[0][0, 0] == labels[1][0, 0] != labels[0][0, -1] == labels[1][-1, 0]
    masked = stylize(teacher, *images, steps=1, masks=(pil(content_mask), pil(style_mask)), progress=False)
    plain = stylize(teacher, *images, steps=1, progress=False)
    assert masked.history[0]["ad"] != pytest.approx(plain.history[0]["ad"])


def test_stylize_batch_is_stylize_pair_by_pair(teacher):
    from muon_ad.data.images import to_tensor
    from muon_ad.synthesis import stylize_batch

    rng = np.random.default_rng(1)
    contents = [pil(make_scene(32, rng)[0]) for _ in range(2)]
    styles = [pil(make_texture(f, "red_white", 32, rng)) for f in ("stripes", "dots")]
    batch = stylize_batch(teacher, torch.stack([to_tensor(c) for c in contents]),
                          torch.stack([to_tensor(s) for s in styles]), steps=3, lr=0.1)
    for i, (content, style) in enumerate(zip(contents, styles)):
        single = stylize(teacher, content, style, steps=3, optimizer="adam", lr=0.1, size=32, progress=False).image
        assert torch.allclose(batch[i], single, atol=1e-4), (batch[i] - single).abs().max()
