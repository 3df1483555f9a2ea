"""The frozen teacher: a latent diffusion model in the Stable Diffusion 1.5 layout.

There are two ways in, and both end in the same loader:
1. a local diffusers-format folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`), such as a
   downloaded SD-1.5, loaded fully offline;
2. the built-in `tiny` preset, which `muon-ad train-teacher` trains on the procedural data and saves in
   exactly that layout (its tokenizer is a word-level tokenizer over the captions' vocabulary, since a
   CLIP BPE vocabulary cannot be downloaded here).

Everything is a stock diffusers/transformers component, so sampling is diffusers' own
`StableDiffusionPipeline`, and the attention processors of the UNet are the standard ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, LCMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from muon_ad import DEFAULT_GUIDANCE_SCALE, DEFAULT_TEACHER, default_path, missing_hint
from muon_ad.checks import fields_within, finite_tensors, fits_memory
from muon_ad.errors import UserError
from muon_ad.io import write_folder_atomic
_REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# A folder's own sampling defaults (a few-step student's steps and guidance), beside the diffusers components.
SAMPLING_FILE = "sampling.json"
TEACHER_STEPS = 30  # DDIM steps of a teacher folder without SAMPLING_FILE


@dataclass
class TinyTeacherConfig:
    """Architecture of the built-in teacher: SD-1.5's structure at a size 2 CPU cores train in minutes."""

    image_size: int = 48
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (16, 32, 64)  # 3 blocks: the latent is image_size / 4
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    attention_heads: int = 2
    text_dim: int = 64
    text_layers: int = 2
    max_prompt_tokens: int = 8
    # Few, wide groups: with one channel per group GroupNorm is instance norm, which erases each channel's
    # spatial mean, i.e. an image's colour; the decoder then paints every flat area one default colour.
    norm_num_groups: int = 4

    def __post_init__(self) -> None:
        fields_within("model", self, ("latent_channels", "unet_layers_per_block", "attention_heads", "text_dim",
                                      "text_layers", "max_prompt_tokens", "norm_num_groups"), 1)
        factor = 2 ** (len(self.vae_channels) - 1)
        if self.image_size < 8 or self.image_size % factor:
            raise UserError(f"model.image_size must be a multiple of {factor} (the autoencoder's downsampling), ≥ 8; "
                            f"got {self.image_size}")
        for name in ("vae_channels", "unet_channels"):
            widths = getattr(self, name)
            if not widths or any(not isinstance(w, int) or w < 1 or w % self.norm_num_groups for w in widths):
                raise UserError(f"model.{name} must be positive multiples of model.norm_num_groups "
                                f"({self.norm_num_groups}), got {list(widths)}")
        params = 40 * sum(w * w for w in (*self.vae_channels, *self.unet_channels))  # ~4 3x3 convs per level
        fits_memory(f"a teacher of widths {list(self.unet_channels)}", 16 * params)


@dataclass
class Teacher:
    """The components of a latent diffusion model, with the few conversions every caller needs."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: PreTrainedTokenizerBase
    scheduler: DDIMScheduler | LCMScheduler
    # {"steps", "guidance_scale"} a folder samples with by default (a few-step student: its steps, no guidance)
    sampling: dict | None = None

    @property
    def default_steps(self) -> int:
        return (self.sampling or {}).get("steps", TEACHER_STEPS)

    @property
    def default_guidance(self) -> float:
        return (self.sampling or {}).get("guidance_scale", DEFAULT_GUIDANCE_SCALE)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def image_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Teacher":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device) if dtype is None else module.to(device, dtype)
        return self

    def freeze(self) -> "Teacher":
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False).eval()
        return self

    def check_prompts(self, prompts: list[str]) -> None:
        """One line for a prompt longer than the tokenizer takes (it would be cut silently otherwise)."""
        limit = self.tokenizer.model_max_length
        for prompt in prompts:
            tokens = len(self.tokenizer(prompt, truncation=False).input_ids)
            if tokens > limit:
                raise UserError(f"prompt {prompt[:40]!r}{'...' if len(prompt) > 40 else ''} is {tokens} tokens; "
                                f"this model's tokenizer takes at most {limit}")

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings (B, tokens, dim) for the UNet's cross-attention."""
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0]

    def encode_images(self, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Images in [-1, 1] → scaled latents (the posterior mean unless `sample`)."""
        posterior = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        latents = posterior.sample() if sample else posterior.mean
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def encode_posterior(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled VAE posterior (mean, std) of many images, encoded `batch_size` at a time (image banks)."""
        means, stds = [], []
        for i in range(0, len(images), batch_size):
            posterior = self.vae.encode(images[i : i + batch_size].to(self.device, self.vae.dtype)).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
        return torch.cat(means), torch.cat(stds)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → images in [-1, 1]."""
        images = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return images.clamp(-1, 1)

    @torch.no_grad()
    def sample(self, prompts: list[str], steps: int | None = None, guidance_scale: float | None = None,
               seed: int = 0, size: int | None = None) -> torch.Tensor:
        """Images (N, 3, size, size) in [-1, 1] drawn with diffusers' StableDiffusionPipeline and the folder's scheduler
        (DDIM, or LCM for a few-step student); steps and guidance default to the folder's (`default_steps`), size to
        the training size."""
        self.check_prompts(prompts)
        steps = self.default_steps if steps is None else steps
        guidance_scale = self.default_guidance if guidance_scale is None else guidance_scale
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator(self.device).manual_seed(seed)
        size = size or self.image_size
        out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator,
                   output_type="pt", height=size, width=size)
        return out.images * 2 - 1

    def pipeline(self):
        """diffusers' StableDiffusionPipeline over these components (no safety checker: offline research use)."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def build_tiny_teacher(cfg: TinyTeacherConfig, vocabulary: list[str]) -> Teacher:
    """A freshly initialised tiny teacher whose tokenizer knows `vocabulary` (the captions' words)."""
    tokens = ["<pad>", "<unk>"] + sorted(set(vocabulary) - {"<pad>", "<unk>"})
    from tokenizers import Tokenizer, models, pre_tokenizers

    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(tokens)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", unk_token="<unk>", model_max_length=cfg.max_prompt_tokens
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokens),
            hidden_size=cfg.text_dim,
            intermediate_size=cfg.text_dim * 4,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=max(1, cfg.text_dim // 32),
            max_position_embeddings=cfg.max_prompt_tokens,
            pad_token_id=0,
            bos_token_id=0,  # there are no CLIP start/end tokens in a word-level vocabulary
            eos_token_id=0,
        )
    )
    vae_blocks = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=cfg.image_size,
    )
    levels = len(cfg.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (vae_blocks - 1),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_dim,
        attention_head_dim=cfg.attention_heads,  # diffusers' SD naming: this is the number of heads
        norm_num_groups=cfg.norm_num_groups,
    )
    return Teacher(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=training_scheduler())


def training_scheduler() -> DDIMScheduler:
    """SD-1.5's noise schedule (scaled linear, 1000 steps, epsilon prediction) as a DDIM sampler."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def teacher_folder(path: str | Path = DEFAULT_TEACHER) -> Path:
    """The teacher folder `path` names (the default as found by `default_path`), checked to be a diffusers SD folder
    without loading anything: a one-line UserError otherwise."""
    folder = default_path(DEFAULT_TEACHER) if str(path) == DEFAULT_TEACHER else Path(path)
    if not folder.is_dir():
        hint = f" ({missing_hint(DEFAULT_TEACHER, '--teacher')})" if str(path) == DEFAULT_TEACHER else ""
        raise UserError(f"teacher folder not found: {folder}{hint}")
    missing = [name for name in _REQUIRED if not (folder / name).is_dir()]
    if missing:
        raise UserError(f"{folder} is not a diffusers SD folder: missing {', '.join(m + '/' for m in missing)}")
    return folder


def load_teacher(path: str | Path = DEFAULT_TEACHER, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Teacher:
    """Load a diffusers-format teacher folder (SD-1.5 layout) offline, frozen and in eval mode."""
    folder = teacher_folder(path)
    scheduler_class = DDIMScheduler  # SD-1.5's PNDM is sampled with DDIM here; a few-step student keeps its LCM
    sampling = None
    try:
        if json.loads((folder / "scheduler" / "scheduler_config.json").read_text()).get("_class_name") == "LCMScheduler":
            scheduler_class = LCMScheduler
        if (folder / SAMPLING_FILE).is_file():
            sampling = json.loads((folder / SAMPLING_FILE).read_text())
        teacher = Teacher(
            unet=UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True),
            vae=AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True),
            text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True),
            tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
            scheduler=scheduler_class.from_pretrained(folder / "scheduler", local_files_only=True),
            sampling=sampling,
        )
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise UserError(f"cannot load teacher from {folder}: {str(error).splitlines()[0]}") from None
    return teacher.to(device, dtype).freeze()


def save_teacher(teacher: Teacher, path: str | Path) -> Path:
    """Write the teacher as a diffusers SD-1.5-layout folder, atomically (temporary folder, then rename);
    refuses non-finite weights."""
    for name in ("unet", "vae", "text_encoder"):
        finite_tensors(f"the teacher's {name} in {path}", getattr(teacher, name).state_dict())

    def write(tmp: Path) -> None:
        teacher.unet.save_pretrained(tmp / "unet")
        teacher.vae.save_pretrained(tmp / "vae")
        teacher.text_encoder.save_pretrained(tmp / "text_encoder")
        teacher.tokenizer.save_pretrained(tmp / "tokenizer")
        teacher.scheduler.save_pretrained(tmp / "scheduler")
        index = {
            "_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", type(teacher.tokenizer).__name__],
            "scheduler": ["diffusers", type(teacher.scheduler).__name__],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        if teacher.sampling is not None:
            (tmp / SAMPLING_FILE).write_text(json.dumps(teacher.sampling, indent=2))

    return write_folder_atomic(path, write)


def noise_scheduler(teacher: Teacher) -> DDPMScheduler:
    """The teacher's forward-noising schedule (for training losses and for noising reference latents)."""
    return DDPMScheduler.from_config(teacher.scheduler.config)
