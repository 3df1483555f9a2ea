"""Style transfer and texture synthesis by attention distillation: images in, image and loss curve out.

Sizes. Every image that enters the UNet must have sides divisible by `size_multiple(teacher)` (VAE factor
times the UNet's downsampling: 8 for the tiny teacher, 64 for SD-1.5). Input images are therefore
*resized*, never rejected: scaled so their short side is the working size (default: the teacher's image
size), aspect ratio kept, each side rounded to the nearest multiple. The style image gets the same short
side as the output, so its textures keep their scale. An explicit texture size that is not a multiple
is a one-line error (it was asked for exactly). Masks are label images, nearest-resized to their image.

Published defaults (SD-1.5): 200 timesteps and content weight 0.25 for style transfer, 300 timesteps for
textures, Adam at lr 0.05, one step per timestep; see `ad_loop` for the formulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from muon_ad.attention import AttentionCapture, ad_loss, content_loss
from muon_ad.attention.capture import LayerSpec
from muon_ad.checks import fit_size
from muon_ad.data.images import array_to_tensor, to_rgb
from muon_ad.errors import UserError
from muon_ad.models.teacher import Teacher
from muon_ad.synthesis.ad_loop import (
    ADObjective,
    History,
    StepCallback,
    ddim_timesteps,
    default_ad_layers,
    optimize_latent,
    resolve_lr,
)
from muon_ad.synthesis.tiling import circular_padding

STYLIZE_STEPS, TEXTURE_STEPS, CONTENT_WEIGHT = 200, 300, 0.25


@dataclass
class SynthesisResult:
    image: Tensor  # (3, H, W) in [-1, 1]
    latent: Tensor  # (1, C, H / f, W / f), the optimised latent
    history: History  # one row per optimiser step: step, timestep, loss, ad, content


def size_multiple(teacher: Teacher) -> int:
    """Image sides must be divisible by this: the VAE's factor times the UNet's total downsampling."""
    return teacher.vae_scale_factor * 2 ** (len(teacher.unet.config.block_out_channels) - 1)


def _style_size(teacher: Teacher, style: Image.Image, short_side: int) -> tuple[int, int]:
    """The style keeps its aspect and gets the output's short side, so its textures keep their scale."""
    return fit_size(*style.size, short_side, size_multiple(teacher))


def _resized(img: Image.Image, size: tuple[int, int], resample: int = Image.BICUBIC) -> Image.Image:
    return img if img.size == size else img.resize(size, resample)


def image_batch(img: Image.Image, size: tuple[int, int]) -> Tensor:
    """PIL image -> (1, 3, height, width) in [-1, 1], resized to size = (width, height)."""
    return array_to_tensor(np.asarray(_resized(to_rgb(img), size)))[None]


def label_maps(masks: tuple[Image.Image, Image.Image], sizes: tuple[tuple[int, int], tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Two label images (image, style) -> integer maps at `sizes` (nearest resize); equal colours, equal labels."""
    packed = [_rgb_codes(np.asarray(_resized(to_rgb(m), s, Image.NEAREST))) for m, s in zip(masks, sizes)]
    colours = np.unique(np.concatenate([p.ravel() for p in packed]))
    return tuple(torch.from_numpy(np.searchsorted(colours, p)) for p in packed)


def _rgb_codes(array: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64, one code per colour."""
    return (array[..., 0].astype(np.int64) << 16) | (array[..., 1].astype(np.int64) << 8) | array[..., 2]


def synthesize(
    teacher: Teacher, style: Image.Image, init: Tensor, content: Tensor | None = None, steps: int = STYLIZE_STEPS,
    optimizer: str = "adam", lr: float | None = None, content_weight: float = CONTENT_WEIGHT, tile: bool = False,
    masks: tuple[Tensor, Tensor] | None = None, layers: LayerSpec = None, progress: bool = True,
    on_step: StepCallback | None = None,
) -> SynthesisResult:
    """Optimise the latent `init` under AD toward `style` (+ content loss toward `content`), then decode.

    `init` and `content` are latents; the style image is resized to the latent's short side. `on_step(row,
    latent)` sees each step's losses and latent as it runs (inside the tiling context, so it may decode).
    """
    lr = resolve_lr(optimizer, lr)  # a bad optimiser name fails before any encoding
    short_side = min(init.shape[-2:]) * teacher.vae_scale_factor
    with torch.no_grad():
        style_latent = teacher.encode_images(image_batch(style, _style_size(teacher, style, short_side)))
    objective = ADObjective(teacher, style_latent, content, content_weight, layers, masks)
    with circular_padding(teacher.unet, teacher.vae.decoder, enabled=tile):
        latent, history = optimize_latent(objective, init, ddim_timesteps(teacher, steps), optimizer, lr, progress,
                                          on_step)
        with torch.no_grad():
            image = teacher.decode_latents(latent)[0]
    return SynthesisResult(image=image, latent=latent, history=history)


def stylize(
    teacher: Teacher, content: Image.Image, style: Image.Image, steps: int = STYLIZE_STEPS, optimizer: str = "adam",
    lr: float | None = None, content_weight: float = CONTENT_WEIGHT, size: int | None = None, tile: bool = False,
    masks: tuple[Image.Image, Image.Image] | None = None, layers: LayerSpec = None, progress: bool = True,
    on_step: StepCallback | None = None,
) -> SynthesisResult:
    """Style transfer: start from the content latent, keep its queries (content loss), take the style's K/V.

    The output has the content image's aspect ratio with short side `size` (default: the teacher's).
    `masks` = (content labels, style labels) images: regions of one colour draw only on that colour's region.
    """
    if size is not None and size < size_multiple(teacher):
        raise UserError(f"size {size}: the short side must be at least {size_multiple(teacher)} px for this teacher")
    out_size = fit_size(*content.size, size or teacher.image_size, size_multiple(teacher))
    with torch.no_grad():
        content_latent = teacher.encode_images(image_batch(content, out_size))
    if masks is not None:
        masks = label_maps(masks, (out_size, _style_size(teacher, style, min(out_size))))
    return synthesize(teacher, style, content_latent, content_latent, steps, optimizer, lr, content_weight, tile,
                      masks, layers, progress, on_step)


def texture(
    teacher: Teacher, exemplar: Image.Image, size: tuple[int, int] | None = None, steps: int = TEXTURE_STEPS,
    optimizer: str = "adam", lr: float | None = None, tile: bool = False, seed: int = 0, layers: LayerSpec = None,
    progress: bool = True, on_step: StepCallback | None = None,
) -> SynthesisResult:
    """Texture synthesis: start from Gaussian noise, AD loss only; size = (height, width), default square."""
    height, width = size or (teacher.image_size, teacher.image_size)
    multiple = size_multiple(teacher)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise UserError(f"texture size {height}x{width}: both sides must be positive multiples of {multiple} for this teacher")
    factor = teacher.vae_scale_factor
    shape = (1, teacher.unet.config.in_channels, height // factor, width // factor)
    init = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(teacher.device)
    return synthesize(teacher, exemplar, init, None, steps, optimizer, lr, 0.0, tile, None, layers, progress, on_step)


def stylize_batch(
    teacher: Teacher, contents: Tensor, styles: Tensor, steps: int = STYLIZE_STEPS, lr: float = 0.05,
    content_weight: float = CONTENT_WEIGHT,
) -> Tensor:
    """`stylize` (Adam) of many pairs at once, pair i = contents[i] + styles[i], (B, 3, H, W) in [-1, 1] at a size
    the teacher takes; returns the stylised images, clamped to [-1, 1].

    The formulation is `stylize`'s (clean latents, one step per DDIM timestep, the default AD layers), but every
    sample has its own style and content references, so one UNet pass serves the whole batch (`ADObjective`
    holds one reference pair for all its samples). Adam is elementwise, so one Adam over the batch is an
    independent Adam per sample; the batch-mean losses are scaled by B so that each sample gets exactly the
    gradient of its own loss.
    """
    layers = default_ad_layers(teacher.unet)
    batch = len(contents)
    embeds = teacher.encode_prompts([""]).expand(batch, -1, -1)
    with torch.no_grad():
        content_latents, style_latents = teacher.encode_images(contents), teacher.encode_images(styles)
    latent = content_latents.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=lr)
    capture = AttentionCapture(teacher.unet, layers, record=("q", "k", "v", "out"))
    for t in ddim_timesteps(teacher, steps).tolist():
        timesteps = torch.full((batch,), t, device=latent.device)
        with torch.no_grad():
            with capture:
                teacher.unet(style_latents, timesteps, embeds)
            style_refs = capture.records
            with capture:
                teacher.unet(content_latents, timesteps, embeds)
            content_refs = capture.records
        with capture:
            teacher.unet(latent, timesteps, embeds)
            loss = ad_loss(capture.records, style_refs) + content_weight * content_loss(capture.records, content_refs)
        optimizer.zero_grad(set_to_none=True)
        (loss * batch).backward()
        optimizer.step()
    with torch.no_grad():
        return teacher.decode_latents(latent.detach()).clamp(-1, 1)

