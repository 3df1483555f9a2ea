"""The distillation objective: the student's losses measured through the frozen teacher, and their weighting.

The twin of `synthesis.ADObjective` (which scores a latent being optimised): this one runs the student and
scores the image it makes. L_distill = L_AD + kl_weight·L_KL and L_content are weighted here, once, for
training (the curriculum's weights) and validation (fixed weights) alike.

For a batch of (content, style) pairs the student makes images; then, at a random timestep t per pair:
1. the student's image is encoded by the teacher's VAE (differentiably), noised to t with noise ε and
   run through the teacher UNet while `AttentionCapture` records its self-attention;
2. the references, without a graph: the content latent noised with the *same* ε (so an image identical
   to its content has exactly the content's queries, and L_content is 0), and the style latent noised
   with its own noise (shared noise would line up queries with same-position keys, and AD would copy
   the style's layout instead of its textures);
3. L_AD = Σ L1(Attn(Q, K, V), SDPA(Q, K_style, V_style)) and L_content = Σ L1(Q, Q_content) over the
   AD layers; L_KL = mean over mapped layer pairs of KL(teacher map ‖ student map), where the student's
   maps are its own (head-averaged) self-attention on the content and the teacher's are its
   self-attention on the student's image, resized to the student's token grid.
The UNet is conditioned on the empty prompt: style and content come from images, not text.
4. optionally L_target = L1(image, the teacher's AD image of the same pair) from a precomputed bank
   (`distill.targets`): the measured way to make the student leave the identity map on a CPU budget.
5. optionally L_texture, the Gram statistics of the student's image against its style's in a fixed random-weight
   conv pyramid, and L_structure, the content's layout in the same pyramid's grey features (`distill.texture`): a
   signal that carries the style's texture where L1 onto a target averages it away, at any size, teacher-free.
The two weighted objectives are style_weight·L_distill + target_weight·L_target + texture_weight·L_texture and
content_weight·L_content + structure_weight·L_structure (kept apart, so conflict projection can compare their
gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from muon_ad.attention import (
    AttentionCapture,
    ad_loss,
    attention_kl,
    attention_probs,
    content_loss,
    resolve_layers,
    self_attention_layer_names,
)
from muon_ad.checks import fields_within
from muon_ad.distill.texture import RandomPyramid, structure_loss, texture_loss
from muon_ad.errors import UserError
from muon_ad.models.student import Student
from muon_ad.models.teacher import Teacher, noise_scheduler


@dataclass
class DistillLossConfig:
    ad_layers: str = "last6"  # teacher self-attention layers of L_AD and L_content (see resolve_layers)
    kl_weight: float = 1.0  # L_distill = L_AD + kl_weight * L_KL
    kl_temperature: float = 1.0
    kl_teacher_layers: list[int] | None = None  # teacher self-attention index per student one; None: by depth
    t_min: int = 100  # the student's image is measured at a timestep drawn from [t_min, t_max)
    t_max: int = 600
    conflict_projection: bool = True  # PCGrad-style projection between L_distill and L_content gradients
    conflict_threshold: float = -0.5
    conflict_rate: float = 0.7
    # L_target: L1 to the teacher's own AD image of the same training pair (`distill.targets`), in the style
    # objective with this weight; 0: no bank. The bank: `target_pairs` pairs, `target_steps` Adam steps at lr
    # `target_lr`, cached at `target_path` (None: OUT_DIR/ad-targets.safetensors; share it between runs).
    target_weight: float = 1.0
    target_pairs: int = 448  # 448 vs 224 at 1200 steps: style FID-domain 23.3 vs 28.6 (the student overfits 224 pairs)
    target_steps: int = 25  # 25 Adam steps at lr 0.2: style FID-domain 12.7, vs 7.0 for the published 200 at 0.05, 1/8 the cost
    target_lr: float = 0.2
    target_path: str | None = None
    # Besides the teacher's size, target_pairs pairs of teacher-size windows of the pictures shown at each of these
    # sizes (px): AD draws a style's texture at the teacher's size, and a window of a larger picture shows it as large
    # as the picture has it, so the student learns it at the sizes it runs at.
    target_scales: tuple[int, ...] = ()
    texture_weight: float = 0.0  # L_texture in the style objective (see distill.texture); 0: not computed
    structure_weight: float = 0.0  # L_structure in the content objective

    def __post_init__(self) -> None:
        fields_within("distill", self, ("kl_weight", "texture_weight", "structure_weight"), 0)
        fields_within("distill", self, ("kl_temperature",), 0, above=True)
        if not 0 <= self.t_min < self.t_max:  # the teacher's own bound is checked once it is loaded
            raise UserError(f"distill.t_min/t_max must satisfy 0 <= t_min < t_max, got {self.t_min}, {self.t_max}")
        fields_within("distill", self, ("conflict_threshold",), -1, 1)
        fields_within("distill", self, ("conflict_rate",), 0, 1)


def layers_by_depth(n_student: int, n_teacher: int) -> list[int]:
    """Pair the i-th of n_student layers with the teacher layer at the same relative depth (data flow)."""
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


class DistillTerms(NamedTuple):
    image: Tensor  # the student's output
    ad: Tensor
    content: Tensor
    kl: Tensor
    target: Tensor  # L1 to the AD target images (0 without targets)
    texture: Tensor  # L_texture (0 when its weight is)
    structure: Tensor  # L_structure (0 when its weight is)
    style_objective: Tensor  # style_weight · (L_AD + kl_weight · L_KL) + target_weight · L_target + texture_weight · L_texture
    content_objective: Tensor  # content_weight · L_content + structure_weight · L_structure

    @property
    def loss(self) -> Tensor:
        return self.style_objective + self.content_objective


class DistillObjective:
    """Runs the student on a batch of pairs and returns its loss terms and weighted objectives; the teacher stays
    frozen throughout."""

    def __init__(self, teacher: Teacher, student: Student, cfg: DistillLossConfig):
        if not 0 <= cfg.t_min < cfg.t_max <= teacher.scheduler.config.num_train_timesteps:
            raise UserError(f"distill.t_min/t_max must satisfy 0 <= t_min < t_max <= "
                            f"{teacher.scheduler.config.num_train_timesteps}, got {cfg.t_min}, {cfg.t_max}")
        self.teacher, self.cfg = teacher, cfg
        self.noise = noise_scheduler(teacher)
        self.ad_layers = resolve_layers(teacher.unet, cfg.ad_layers)
        self.student_layers = self_attention_layer_names(student)
        teacher_self = self_attention_layer_names(teacher.unet)
        indices = cfg.kl_teacher_layers or layers_by_depth(len(self.student_layers), len(teacher_self))
        if len(indices) != len(self.student_layers):
            raise UserError(f"distill.kl_teacher_layers needs one teacher layer per student self-attention layer "
                            f"({len(self.student_layers)}), got {len(indices)}")
        self.kl_pairs = list(zip(self.student_layers, resolve_layers(teacher.unet, indices)))
        self.capture_layers = list(dict.fromkeys(self.ad_layers + [t for _, t in self.kl_pairs]))
        with torch.no_grad():
            self.empty_prompt = teacher.encode_prompts([""])
        self.pyramid = RandomPyramid().to(teacher.device) if cfg.texture_weight or cfg.structure_weight else None

    def image_terms(self, image: Tensor, content: Tensor, style: Tensor) -> tuple[Tensor, Tensor]:
        """(L_texture, L_structure) of the student's image, each 0 (not computed) when its weight is."""
        zero = image.new_zeros(())
        texture = texture_loss(self.pyramid, image.float(), style) if self.cfg.texture_weight else zero
        structure = structure_loss(self.pyramid, image.float(), content) if self.cfg.structure_weight else zero
        return texture, structure

    def encode(self, images: Tensor) -> Tensor:
        """Scaled VAE latents (posterior means) of reference images; computed once per image bank."""
        return self.teacher.encode_posterior(images)[0] * self.teacher.vae.config.scaling_factor

    def __call__(
        self, student: Student, content: Tensor, style: Tensor, content_latents: Tensor, style_latents: Tensor,
        style_weight: float, content_weight: float, generator: torch.Generator | None = None,
        targets: Tensor | None = None, shard: tuple[int, int] = (0, 1),
    ) -> DistillTerms:
        """The student's images for one batch of pairs, the scalar losses, and the two weighted objectives.

        With `targets` (the AD images of these pairs) L_target joins the style objective. When both weights
        are 0 nothing needs the teacher: its passes are skipped (about 5x cheaper a step) and L_AD, L_KL and
        L_content are reported as 0. `shard` = (rank, ranks), ranks > 1: the batch is slice `rank` of a global batch
        `ranks` times as large; the timesteps and noise are drawn for the global batch and sliced, so N ranks draw what one
        process of the global batch draws (and their RNGs stay equal)."""
        c = self.cfg
        if style_weight == 0 and content_weight == 0:  # the student's attention maps are needed by L_KL only
            image = student(content, style)
            target = F.l1_loss(image.float(), targets) if targets is not None else image.new_zeros(())
            texture, structure = self.image_terms(image, content, style)
            zero = image.new_zeros(())
            return DistillTerms(image, zero, zero, zero, target, texture, structure,
                                c.target_weight * target + c.texture_weight * texture, c.structure_weight * structure)
        # `student` may be its DDP wrapper (several processes): capture on the module itself, run through the wrapper.
        with AttentionCapture(getattr(student, "module", student), layers=self.student_layers, record=(),
                              maps="mean") as capture:
            image = student(content, style)
        student_maps = {name: capture.records[name]["maps"] for name in self.student_layers}
        target = F.l1_loss(image.float(), targets) if targets is not None else image.new_zeros(())

        batch, device = len(content), content.device
        rank, shards = shard
        draws = batch * shards
        t = torch.randint(self.cfg.t_min, self.cfg.t_max, (draws,), generator=generator, device="cpu")
        eps, eps_style = (torch.randn((draws, *content_latents.shape[1:]), generator=generator) for _ in range(2))
        t, eps, eps_style = (x.reshape(shards, batch, *x.shape[1:])[rank].to(device) for x in (t, eps, eps_style))
        unet = self.teacher.unet
        with torch.no_grad(), AttentionCapture(unet, layers=self.ad_layers, record=("q", "k", "v")) as capture:
            references = torch.cat([self.noise.add_noise(content_latents, eps, t),
                                    self.noise.add_noise(style_latents, eps_style, t)])
            unet(references, t.repeat(2), self.empty_prompt.expand(2 * batch, -1, -1))
            content_records = {n: {k: v[:batch] for k, v in r.items()} for n, r in capture.records.items()}
            style_records = {n: {k: v[batch:] for k, v in r.items()} for n, r in capture.records.items()}

        latents = self.teacher.encode_images(image)
        with AttentionCapture(unet, layers=self.capture_layers, record=("q", "k", "out")) as capture:
            unet(self.noise.add_noise(latents, eps, t), t, self.empty_prompt.expand(batch, -1, -1))
            records = capture.records
        kl_terms = []
        for student_layer, teacher_layer in self.kl_pairs:
            record = records[teacher_layer]
            with torch.no_grad():
                teacher_maps = attention_probs(record["q"], record["k"], mean_heads=True)
            kl_terms.append(attention_kl(student_maps[student_layer], teacher_maps, self.cfg.kl_temperature))
        ad = ad_loss(records, style_records, self.ad_layers)
        kept = content_loss(records, content_records, self.ad_layers)
        kl = torch.stack(kl_terms).mean()
        texture, structure = self.image_terms(image, content, style)
        return DistillTerms(image, ad, kept, kl, target, texture, structure,
                            style_objective=(style_weight * (ad + c.kl_weight * kl) + c.target_weight * target
                                             + c.texture_weight * texture),
                            content_objective=content_weight * kept + c.structure_weight * structure)
