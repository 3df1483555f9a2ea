"""The real-time stylisation student: content image + style image → stylised image in one forward pass.

Shape (after the authors' configs): a light UNet (base channels × multipliers (1, 2, 4), GELU, GroupNorm)
with self-attention transformer blocks at the lowest resolutions, and a style encoder whose tokens enter
the UNet by cross-attention (or, as an option, by AdaIN-style scale/shift of the ResNet blocks' norms).
Blocks are stock diffusers modules (`ResnetBlock2D`, `Transformer2DModel`), so `AttentionCapture` reads
the student's attention maps exactly as it reads the teacher's.

Decisions, measured (1 thread of the shared 2-core CPU, medians of 15 interleaved runs; quality after 150
phase-1 steps of `muon-ad distill`, batch 8, Muon + projection, on the built-in teacher, same seed):
- Pixel space with a strided stem, not the latents of an autoencoder. The stem folds s×s pixel blocks
  into channels (pixel-unshuffle, lossless) and the head unfolds them (pixel-shuffle), so the UNet runs
  at 1/s resolution: in effect a tiny autoencoder learned end to end. The same UNet on the teacher's
  VAE latents (16x16 at 64 px, like stem 4) needs the VAE in the real-time path:
      CPU preset at 128 px: pixel 0.68 GFLOP, 56 ms | latent 3.46 GFLOP, 259 ms
                 at 256 px: pixel 2.71 GFLOP, 133 ms | latent 13.8 GFLOP, 958 ms
  and it starts from the VAE's reconstruction, SSIM 0.70 to the content (pixel: 1.00), below the
  curriculum's SSIM target of 0.85; val loss at step 50: latent 1.105, pixel 1.058 (lower is better),
  with ~2x the training step time.
- Cross-attention to 16 style tokens, not AdaIN (the style vector scaling/shifting the ResNet norms):
  a tie on quality (val loss 1.042 vs 1.037, FID-domain 47.0 vs 47.8, SSIM 0.51 vs 0.52) and speed
  (164 vs 158 ms at 256 px); cross-attention is the authors' design and keeps the style's spatial
  tokens. `style_injection: adain` remains a knob.
- CPU preset: base 32, self-attention (2 heads) at the lowest level only. Base 16 is faster (61 vs 133
  ms at 256 px) but learns too little (val loss 1.052 vs 1.042, FID-domain 50.3 vs 47.0, from 1.11 /
  50.6 at the start). Attention at the second-lowest level too, as the authors have it, sees 1024
  tokens at 256 px, where 8-head attention of head size 8 took ~40% of the forward time. The authors'
  shape (base 64, 8 heads, two attention levels, stem 2) is the GPU preset, ~16x the FLOPs.

Images are (B, 3, H, W) in [-1, 1] in and out, any H and W: inputs are padded (replicate) to a multiple
of the total downsampling and the output is cropped back. The style image is resized to `style_size`
first, so the style code does not depend on the resolution the style happens to be stored at, and it
can be computed once (`encode_style`) and reused for every frame of a stream (`apply_style`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import safetensors
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from muon_ad.checks import fields_within, finite_tensors, fits_memory, one_of, within
from muon_ad.config import from_dict
from muon_ad.errors import UserError
from muon_ad.io import CHECKSUMS, checksum_problem, write_checksums, write_folder_atomic


@dataclass
class StudentConfig:
    """Width and depth knobs of the student. The defaults are the CPU preset (configs/stylize-cpu.yaml);
    the authors' shape (base 64, 8 heads, attention at the two lowest levels) is configs/stylize-gpu.yaml."""

    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4)
    stem_stride: int = 4  # pixels per side folded into one level-0 cell (1 = full resolution)
    attention_levels: int = 1  # self-attention blocks at this many of the lowest-resolution levels
    heads: int = 2
    # cross_attention: 16 pooled style tokens; adain: their mean scales/shifts the ResNet norms; statistics: the mean
    # and spread of every style-encoder stage (texture at each scale) scale/shift the ResNet norms
    style_injection: Literal["cross_attention", "adain", "statistics"] = "statistics"
    style_channels: tuple[int, ...] = (32, 64, 128)  # style encoder: one stride-2 conv stage each
    style_dim: int = 128  # width of a style token (cross-attention) or the style vector (AdaIN)
    style_grid: int = 4  # the style encoder pools to style_grid x style_grid tokens (cross_attention, adain)
    # style images are resized to this square before encoding (48: the built-in teacher's size, at which distillation
    # makes them); None: encoded as given, so the encoder sees the style's texture at the scale the style shows it
    style_size: int | None = None
    norm_groups: int = 8
    position_periods: tuple[int, ...] = (8, 16, 32, 64)  # sin/cos of the pixel position at these periods (px) enter the stem
    head: Literal["pixel_shuffle", "refine"] = "refine"  # refine: upsampled features + content at full size

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a one-line UserError for inconsistent knobs (`Student` runs it too: overrides skip __post_init__),
        and for a shape whose training would not fit in memory, before anything is allocated."""
        fields_within("student", self, ("base_channels", "stem_stride", "heads", "style_dim", "style_grid",
                                        "norm_groups"), 1)
        if self.style_size is not None:
            within("student.style_size", self.style_size, 1)
        for period in self.position_periods:
            within("student.position_periods entries", period, 2)
        if not self.channel_mult or not self.style_channels:
            raise UserError("student.channel_mult and student.style_channels need at least one entry each")
        for name in ("channel_mult", "style_channels"):
            for value in getattr(self, name):
                within(f"student.{name} entries", value, 1)
        one_of("student.style_injection", self.style_injection, ("cross_attention", "adain", "statistics"))
        one_of("student.head", self.head, ("pixel_shuffle", "refine"))
        # ~7 3x3 convs' worth of weights per level (resnets, resampling, attention); x16 bytes: fp32 weights,
        # gradients and two Adam moments.
        params = 63 * sum(w * w for w in self.widths) + 9 * sum(c * c for c in self.style_channels)
        fits_memory(f"a student of widths {self.widths}", 16 * params)
        widths = self.widths
        if not 1 <= self.attention_levels <= len(widths):
            raise UserError(f"student.attention_levels must be in 1..{len(widths)}, got {self.attention_levels}")
        for w in widths[-self.attention_levels:]:
            if w % self.heads:
                raise UserError(f"student width {w} is not divisible by student.heads={self.heads}")
        if any(w % self.norm_groups for w in widths + list(self.style_channels)):
            raise UserError(f"every student width must be a multiple of student.norm_groups={self.norm_groups}")

    @property
    def widths(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_mult]

    @property
    def downsampling(self) -> int:
        """Input sizes are padded to a multiple of this."""
        return self.stem_stride * 2 ** (len(self.channel_mult) - 1)


class StyleEncoder(nn.Module):
    """Style image → tokens: stride-2 conv stages, then either an average-pool grid (B, style_grid², style_dim), or
    (`statistics`) one token (B, 1, style_dim) from the per-channel mean and standard deviation of every stage: the
    style's texture statistics at each scale, from a style image of any size."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.statistics = cfg.style_injection == "statistics"
        layers: list[nn.Module] = []
        for cin, cout in zip((3, *cfg.style_channels), cfg.style_channels):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(cfg.norm_groups, cout), nn.GELU()]
        if not self.statistics:
            layers.append(nn.AdaptiveAvgPool2d(cfg.style_grid))
        self.body = nn.Sequential(*layers)
        width = 2 * sum(cfg.style_channels) + 6 if self.statistics else cfg.style_channels[-1]  # + the pixels' own
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, cfg.style_dim)

    def forward(self, style: Tensor) -> Tensor:
        if not self.statistics:
            return self.proj(self.norm(self.body(style).flatten(2).transpose(1, 2)))
        stats, h = [channel_mean_std(style)], style
        for k in range(0, len(self.body), 3):  # each stage is conv, norm, activation
            h = self.body[k : k + 3](h)
            stats.append(channel_mean_std(h))
        return self.proj(self.norm(torch.cat(stats, dim=1)))[:, None]


def channel_mean_std(h: Tensor) -> Tensor:
    """(B, C, H, W) → (B, 2C): each channel's mean and standard deviation over the image."""
    mean = h.mean(dim=(2, 3))
    return torch.cat([mean, (h.square().mean(dim=(2, 3)) - mean.square()).clamp_min(1e-6).sqrt()], dim=1)


def position_features(height: int, width: int, stride: int, periods: tuple[int, ...], like: Tensor) -> Tensor:
    """(1, 4·len(periods), height, width): sin and cos of the x and y pixel position of each stem cell's centre at each
    period: the phase a drawn texture needs where the content is flat (and no edge says where a stripe goes)."""
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) * stride
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) * stride
    maps = []
    for period in periods:
        fy, fx = ys * (2 * torch.pi / period), xs * (2 * torch.pi / period)
        for wave in (torch.sin, torch.cos):
            maps.append(wave(fy)[:, None].expand(height, width))
            maps.append(wave(fx)[None, :].expand(height, width))
    return torch.stack(maps)[None]


class StudentBlock(nn.Module):
    """A ResNet block, then (at attention levels) a transformer: self-attention, cross-attention to the
    style tokens (when injecting by cross-attention), feed-forward."""

    def __init__(self, cin: int, cout: int, attention: bool, cfg: StudentConfig):
        super().__init__()
        adain = cfg.style_injection in ("adain", "statistics")
        self.adain = adain
        # AdaIN: the style vector scales and shifts the block's second GroupNorm (diffusers' "scale_shift").
        self.resnet = ResnetBlock2D(
            in_channels=cin, out_channels=cout, temb_channels=cfg.style_dim if adain else None, groups=cfg.norm_groups,
            non_linearity="gelu", time_embedding_norm="scale_shift" if adain else "default",
        )
        self.transformer = None
        if attention:
            self.transformer = Transformer2DModel(
                num_attention_heads=cfg.heads, attention_head_dim=cout // cfg.heads, in_channels=cout,
                norm_num_groups=cfg.norm_groups, cross_attention_dim=None if adain else cfg.style_dim,
                activation_fn="gelu",
            )

    def forward(self, h: Tensor, tokens: Tensor) -> Tensor:
        h = self.resnet(h, tokens.mean(dim=1) if self.adain else None)
        if self.transformer is not None:
            h = self.transformer(h, encoder_hidden_states=None if self.adain else tokens, return_dict=False)[0]
        return h


class Student(nn.Module):
    """content (B,3,H,W) + style (B or 1,3,h,w), both in [-1,1] → stylised image (B,3,H,W) in [-1,1]."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        cfg.check()
        self.config = cfg
        widths, s = cfg.widths, cfg.stem_stride
        attention = [i >= len(widths) - cfg.attention_levels for i in range(len(widths))]
        self.style_encoder = StyleEncoder(cfg)
        # Modules are registered in data-flow order: attention layers are then listed in that order too.
        self.stem = nn.Sequential(nn.PixelUnshuffle(s), nn.Conv2d(3 * s * s, widths[0], 3, padding=1))
        # The position features' own conv, added to the stem's (one conv of both, split: the stem stays the image's)
        self.position = (nn.Conv2d(4 * len(cfg.position_periods), widths[0], 3, padding=1, bias=False)
                         if cfg.position_periods else None)
        self.down = nn.ModuleList(
            StudentBlock(cin, cout, att, cfg) for cin, cout, att in zip([widths[0], *widths], widths, attention)
        )
        self.downsample = nn.ModuleList(Downsample2D(w, use_conv=True) for w in widths[:-1])
        self.mid = StudentBlock(widths[-1], widths[-1], attention[-1], cfg)
        self.upsample = nn.ModuleList(Upsample2D(w, use_conv=True) for w in reversed(widths[1:]))
        # Up path, lowest level first: each block takes the features from below (the mid block's at the
        # lowest level, then the previous up block's) concatenated with its level's skip.
        incoming = [widths[-1], *reversed(widths[1:])]
        self.up = nn.ModuleList(StudentBlock(cin + skip, skip, att, cfg)
                                for cin, skip, att in zip(incoming, reversed(widths), reversed(attention)))
        if cfg.head == "pixel_shuffle":  # the change, s x s pixels per level-0 cell
            self.head = nn.Sequential(
                nn.GroupNorm(cfg.norm_groups, widths[0]), nn.GELU(), nn.Conv2d(widths[0], 3 * s * s, 3, padding=1),
                nn.PixelShuffle(s),
            )
            self.refine = None
        else:  # refine: features upsampled (bilinear, no s x s blocks), then two convs at full size that see the content
            self.head = nn.Sequential(
                nn.GroupNorm(cfg.norm_groups, widths[0]), nn.GELU(), nn.Conv2d(widths[0], REFINE_WIDTH, 3, padding=1),
                nn.Upsample(scale_factor=s, mode="bilinear", align_corners=False),
            )
            self.refine = nn.Sequential(nn.Conv2d(REFINE_WIDTH + 3, REFINE_WIDTH, 3, padding=1), nn.GELU(),
                                        nn.Conv2d(REFINE_WIDTH, 3, 3, padding=1))
        nn.init.zeros_(self.output_layer.weight)  # an untrained student returns its content image (see `apply_style`)
        nn.init.zeros_(self.output_layer.bias)
        self.widths: dict[str, dict[str, int]] | None = None  # per-layer widths of a compacted (pruned) student

    @property
    def output_layer(self) -> nn.Conv2d:
        """The head's last convolution (zero at initialisation)."""
        return self.head[2] if self.refine is None else self.refine[2]

    def encode_style(self, style: Tensor) -> Tensor:
        """Style tokens (B, style_grid² or 1, style_dim); compute once per style and pass to `apply_style`."""
        size = self.config.style_size
        if size is not None and style.shape[-2:] != (size, size):
            style = F.interpolate(style, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.style_encoder(style)

    def apply_style(self, content: Tensor, tokens: Tensor) -> Tensor:
        """The UNet pass for given style tokens (batch 1 or B).

        The head predicts a change of the content image in tanh-logit space, image = tanh(atanh(content) +
        change) (content clamped to ±0.99, so atanh stays finite): the output is always inside [-1, 1], and
        training starts from the content's structure (the head starts at zero) and adds the style on top.
        """
        height, width = content.shape[-2:]
        content = pad_to_multiple(content, self.config.downsampling)
        tokens = tokens.expand(content.shape[0], *tokens.shape[1:])
        h = self.stem(content)
        if self.position is not None:
            s = self.config.stem_stride
            h = h + self.position(position_features(h.shape[-2], h.shape[-1], s, self.config.position_periods, h))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, tokens)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, tokens)
        for i, block in enumerate(self.up):
            if i > 0:
                h = self.upsample[i - 1](h)
            h = block(torch.cat([h, skips.pop()], dim=1), tokens)
        # tanh(atanh(x) + change) by tanh's addition formula, (x + tanh(change)) / (1 + x·tanh(change)): the same
        # image without an atanh or log over every pixel (ONNX Runtime's Atanh kernel is scalar: it took 22 of the
        # edge student's 58 ms at 512 px, 2 threads). The denominator is at least 0.01 on the clamped content.
        change = self.head(h) if self.refine is None else self.refine(torch.cat([self.head(h), content], dim=1))
        x, shift = content.clamp(-0.99, 0.99), torch.tanh(change)
        return ((x + shift) / (1 + x * shift))[..., :height, :width]

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        return self.apply_style(content, self.encode_style(style))


REFINE_WIDTH = 16  # channels of the refine head at full size: a few, for its cost is per output pixel


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Pad (B,C,H,W) on the bottom and right, replicating the edge, so H and W are multiples of `multiple`;
    crop the result back with `[..., :H, :W]`."""
    height, width = images.shape[-2:]
    if height % multiple or width % multiple:
        images = F.pad(images, (0, -width % multiple, 0, -height % multiple), mode="replicate")
    return images


# The first student shape (cross-attention to 16 tokens of a 48-px style, pixel-shuffle head), which folders saved before
# the texture knobs have: their config.json lacks `position_periods` and `head`, and the defaults are another shape.
FIRST_SHAPE = {"style_injection": "cross_attention", "style_size": 48, "position_periods": [], "head": "pixel_shuffle"}
WIDTHS = "widths.json"  # in the folder of a compacted student: the per-layer widths its tensors have


def layer_widths(student: nn.Module) -> dict[str, dict[str, int]]:
    """The width of every layer whose width pruning can change: conv/linear in and out, norm channels, attention
    heads, the channel count diffusers' resampling blocks assert on, and whether each block still has its
    transformer (pruning can remove whole ones). JSON-ready; `apply_widths` rebuilds it."""
    widths = {}
    for name, m in student.named_modules():
        if isinstance(m, StudentBlock):
            widths[name] = {"transformer": int(m.transformer is not None)}
        elif isinstance(m, nn.Conv2d):
            widths[name] = {"in": m.in_channels, "out": m.out_channels}
        elif isinstance(m, nn.Linear):
            widths[name] = {"in": m.in_features, "out": m.out_features}
        elif isinstance(m, nn.GroupNorm):
            widths[name] = {"channels": m.num_channels}
        elif isinstance(m, nn.LayerNorm):
            widths[name] = {"channels": m.normalized_shape[0]}
        elif isinstance(m, Attention):
            widths[name] = {"heads": m.heads}
        elif isinstance(m, (Downsample2D, Upsample2D)):
            widths[name] = {"channels": m.channels}
    return widths


def _empty(param: nn.Parameter | None, *shape: int) -> nn.Parameter | None:
    return None if param is None else nn.Parameter(param.new_empty(shape))


@torch.no_grad()
def apply_widths(student: Student, widths: dict[str, dict[str, int]]) -> Student:
    """Give `student` (built from its config) the layer widths of a compacted one, with uninitialised tensors of
    those shapes for a state dict to fill: how a pruned student is rebuilt without pickle."""
    for name, width in widths.items():  # removed transformers first: the layers inside them are then not listed
        m = student.get_submodule(name) if "transformer" in width else None
        if isinstance(m, StudentBlock) and not width["transformer"]:
            m.transformer = None
        elif isinstance(m, StudentBlock) and m.transformer is None:
            raise UserError(f"{WIDTHS} gives block {name} a transformer its config does not have")
    modules = dict(student.named_modules())
    if unknown := sorted(set(widths) - set(modules)):
        raise UserError(f"{WIDTHS} names layers the student does not have: {', '.join(unknown[:3])}")
    for name, width in widths.items():
        m = modules[name]
        if isinstance(m, nn.Conv2d):
            m.in_channels, m.out_channels = width["in"], width["out"]
            m.weight = _empty(m.weight, width["out"], width["in"] // m.groups, *m.kernel_size)
            m.bias = _empty(m.bias, width["out"])
        elif isinstance(m, nn.Linear):
            m.in_features, m.out_features = width["in"], width["out"]
            m.weight, m.bias = _empty(m.weight, width["out"], width["in"]), _empty(m.bias, width["out"])
        elif isinstance(m, nn.GroupNorm):
            m.num_channels = width["channels"]
            m.weight, m.bias = _empty(m.weight, width["channels"]), _empty(m.bias, width["channels"])
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = (width["channels"],)
            m.weight, m.bias = _empty(m.weight, width["channels"]), _empty(m.bias, width["channels"])
        elif isinstance(m, Attention):
            m.heads = width["heads"]
        elif isinstance(m, (Downsample2D, Upsample2D)):
            m.channels = width["channels"]
    student.widths = widths
    return student


def save_student(student: Student, folder: str | Path) -> Path:
    """Write `folder/` with config.json, model.safetensors (and, for a compacted student, widths.json) and their
    checksums.json, atomically (temporary folder, then rename); refuses non-finite weights."""
    finite_tensors(f"the student in {folder}", student.state_dict())

    def write(tmp: Path) -> None:
        save_model(student, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(asdict(student.config), indent=2))
        if student.widths is not None:
            (tmp / WIDTHS).write_text(json.dumps(student.widths, indent=1))
        write_checksums(tmp)

    return write_folder_atomic(folder, write)


def load_student(folder: str | Path) -> Student:
    """A saved student, in eval mode (no pickle: safetensors weights + JSON config, and for a compacted student the
    JSON of its layer widths, from which its architecture is rebuilt before the weights load)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise UserError(f"not a student folder (needs config.json + model.safetensors): {folder}")
    required = ("config.json", "model.safetensors", *([WIDTHS] if (folder / WIDTHS).is_file() else []))
    if (folder / CHECKSUMS).is_file() and (problem := checksum_problem(folder, required)):
        raise UserError(f"student folder {folder} is corrupt: {problem}")  # folders from before checksums load as they are
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{folder}/config.json is not valid JSON") from None
    if isinstance(raw, dict):
        raw = {**FIRST_SHAPE, **raw}  # a folder from before these knobs: the shape it was made with
    cfg = from_dict(StudentConfig, raw, f"{folder}/config.json")  # the same checks as a YAML config
    with torch.random.fork_rng(devices=[]):  # initial weights, overwritten below, must not use the run's stream
        student = Student(cfg)
    if WIDTHS in required:
        try:
            widths = json.loads((folder / WIDTHS).read_text())
            apply_widths(student, widths)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise UserError(f"{folder}/{WIDTHS} is not a valid table of layer widths") from None
    try:
        load_model(student, str(folder / "model.safetensors"))
    except (RuntimeError, OSError, safetensors.SafetensorError) as error:
        raise UserError(f"{folder}/model.safetensors does not load: {str(error).splitlines()[0]}") from None
    return student.eval()
