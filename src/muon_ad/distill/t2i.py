"""Objectives of the compressed, few-step text-to-image student (`recipes.distill_t2i`).

Phase 1, architectural distillation (BK-SDM, Kim et al. 2023, plus this project's attention KL): on a noisy
latent of a real image and its caption,
    L_task    = MSE(ε_student, ε)                       the ordinary denoising loss;
    L_out     = MSE(ε_student, ε_teacher)               output distillation;
    L_feat    = mean over paired block outputs of ||f_s − f_t||² / ||f_t||², per sample: each block's error
                relative to the teacher's feature, as LAPTOP-Diff normalises it (BK-SDM's raw feature MSE is
                tens of times the other terms and dominates the sum);
    L_KL      = mean over paired self-attention layers of KL(teacher map ‖ student map).
Two weighted objectives, so conflict projection can compare their gradients: the distillation objective
out·L_out + feat·L_feat + kl·L_KL, and the task objective task·L_task.

Phase 2, step distillation by latent consistency distillation (LCD, Luo et al. 2023, "Latent Consistency
Models"): the student learns the consistency function f(z_t, t) = c_skip(t)·z_t + c_out(t)·x̂0(z_t, t) that maps
every point of the teacher's probability-flow ODE trajectory to its end. One teacher DDIM step with classifier-free
guidance (scale w, baked in: the student needs no guidance at sampling) goes from t to s = t − k on a grid of
`solver_steps` timesteps; the loss is MSE(f_student(z_t, t), f_target(z_s, s)) where the target network is an EMA
of the student. diffusers' LCMScheduler samples the result in 1–8 steps, with the same c_skip/c_out.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import LCMScheduler, UNet2DConditionModel
from torch import Tensor, nn

from muon_ad import DEFAULT_GUIDANCE_SCALE
from muon_ad.attention import AttentionCapture, attention_kl, feature_distillation, output_distillation
from muon_ad.attention import self_attention_layer_names
from muon_ad.checks import fields_within
from muon_ad.models.t2i_student import paired_blocks, teacher_name
from muon_ad.models.teacher import noise_scheduler, Teacher


@dataclass
class T2ILossConfig:
    task_weight: float = 1.0
    output_weight: float = 1.0
    feature_weight: float = 1.0
    kl_weight: float = 1.0
    kl_temperature: float = 1.0
    caption_dropout: float = 0.1  # empty prompts in phase 1, so the student keeps an unconditional branch
    conflict_projection: bool = True  # PCGrad-style, between the distillation and the task objective
    conflict_threshold: float = -0.5
    conflict_rate: float = 0.7

    def __post_init__(self) -> None:
        fields_within("distill", self, ("task_weight", "output_weight", "feature_weight", "kl_weight"), 0)
        fields_within("distill", self, ("kl_temperature",), 0, above=True)
        fields_within("distill", self, ("caption_dropout", "conflict_rate"), 0, 1)
        fields_within("distill", self, ("conflict_threshold",), -1, 1)


@dataclass
class ConsistencyConfig:
    solver_steps: int = 50  # the DDIM grid of the teacher's solver = LCMScheduler's original_inference_steps
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE  # the teacher's guidance, baked into the student
    target_decay: float = 0.95  # EMA of the target network (LCM's)
    sample_steps: int = 4  # the student's sampling steps, written into its folder

    def __post_init__(self) -> None:
        fields_within("consistency", self, ("solver_steps",), 2, 1000)
        fields_within("consistency", self, ("sample_steps",), 1, 8)
        fields_within("consistency", self, ("guidance_scale",), 1)
        fields_within("consistency", self, ("target_decay",), 0, 1)


class CompressTerms(NamedTuple):
    task: Tensor
    output: Tensor
    feature: Tensor
    kl: Tensor
    distill_objective: Tensor
    task_objective: Tensor

    @property
    def loss(self) -> Tensor:
        return self.distill_objective + self.task_objective


@contextmanager
def block_outputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Record the hidden states each named block returns (a down block's first output) during the block."""
    outputs: dict[str, Tensor] = {}
    modules = dict(model.named_modules())

    def hook(name: str):
        def store(module: nn.Module, args: object, output: Tensor | tuple) -> None:
            outputs[name] = output[0] if isinstance(output, tuple) else output
        return store

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class CompressObjective:
    """BK-SDM's losses plus the attention KL, between a frozen teacher UNet and a student made from it."""

    def __init__(self, teacher: Teacher, student: UNet2DConditionModel, cfg: T2ILossConfig):
        self.teacher, self.cfg = teacher, cfg
        self.noise = noise_scheduler(teacher)
        self.blocks = paired_blocks(student.config, teacher.unet.config)
        self.attention = [(s, teacher_name(s, student.config, teacher.unet.config))
                          for s in self_attention_layer_names(student)]

    def __call__(self, student: UNet2DConditionModel, latents: Tensor, text: Tensor, t: Tensor,
                 eps: Tensor) -> CompressTerms:
        noisy = self.noise.add_noise(latents, eps, t)
        maps = "mean" if self.cfg.kl_weight > 0 else False
        with torch.no_grad(), block_outputs(self.teacher.unet, [t_ for _, t_ in self.blocks]) as teacher_feats, \
                AttentionCapture(self.teacher.unet, [t_ for _, t_ in self.attention], record=(), maps=maps) as cap:
            teacher_eps = self.teacher.unet(noisy, t, text).sample
            teacher_maps = cap.records
        # `student` may be its DDP wrapper (several processes): capture on the module itself, run through the wrapper.
        module = getattr(student, "module", student)
        with block_outputs(module, [s for s, _ in self.blocks]) as student_feats, \
                AttentionCapture(module, [s for s, _ in self.attention], record=(), maps=maps) as cap:
            student_eps = student(noisy, t, text).sample
            student_maps = cap.records
        task = F.mse_loss(student_eps.float(), eps.float())
        output = output_distillation(student_eps.float(), teacher_eps.float())
        feature = feature_distillation([student_feats[s].float() for s, _ in self.blocks],
                                       [teacher_feats[t_].float() for _, t_ in self.blocks])
        kl = (torch.stack([attention_kl(student_maps[s]["maps"], teacher_maps[t_]["maps"], self.cfg.kl_temperature)
                           for s, t_ in self.attention]).mean() if maps else task.new_zeros(()))
        c = self.cfg
        return CompressTerms(task, output, feature, kl,
                             distill_objective=c.output_weight * output + c.feature_weight * feature + c.kl_weight * kl,
                             task_objective=c.task_weight * task)


def few_step_scheduler(teacher: Teacher, cfg: ConsistencyConfig) -> LCMScheduler:
    """The student's sampler: diffusers' LCMScheduler on the teacher's noise schedule and the solver's grid."""
    config = {k: v for k, v in teacher.scheduler.config.items() if not k.startswith("_")}
    config.update(original_inference_steps=cfg.solver_steps, timestep_scaling=10.0)
    return LCMScheduler.from_config(config)


class ConsistencyObjective:
    """Latent consistency distillation: one teacher DDIM step with guidance, target from an EMA of the student."""

    def __init__(self, teacher: Teacher, cfg: ConsistencyConfig):
        self.teacher, self.cfg = teacher, cfg
        self.scheduler = few_step_scheduler(teacher, cfg)
        self.skip = teacher.scheduler.config.num_train_timesteps // cfg.solver_steps
        self.grid = torch.arange(1, cfg.solver_steps + 1) * self.skip - 1  # LCMScheduler's grid: 19, 39, ..., 999
        self.alphas = self.scheduler.alphas_cumprod
        with torch.no_grad():
            self.empty_prompt = teacher.encode_prompts([""])

    def draw_timesteps(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        return self.grid[torch.randint(len(self.grid), (batch,), generator=generator)]

    def consistency(self, unet: UNet2DConditionModel, z: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """f(z_t, t) = c_skip·z_t + c_out·x̂0, with LCMScheduler's boundary scalings (f = z at t = 0)."""
        eps = unet(z, t, text).sample
        c_skip, c_out = (torch.as_tensor(c, dtype=z.dtype, device=z.device).view(-1, 1, 1, 1)
                         for c in self.scheduler.get_scalings_for_boundary_condition_discrete(t.cpu().float()))
        return c_skip * z + c_out * self._x0(z, eps, t)

    def _x0(self, z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        a = self.alphas.to(z.device)[t].view(-1, 1, 1, 1).to(z.dtype)
        return (z - (1 - a).sqrt() * eps) / a.sqrt()

    @torch.no_grad()
    def solver_step(self, z: Tensor, t: Tensor, s: Tensor, text: Tensor) -> Tensor:
        """One DDIM step t → s of the teacher's probability-flow ODE, with classifier-free guidance."""
        batch = len(z)
        both = self.teacher.unet(torch.cat([z, z]), torch.cat([t, t]),
                                 torch.cat([self.empty_prompt.expand(batch, -1, -1), text])).sample
        uncond, cond = both.chunk(2)
        eps = uncond + self.cfg.guidance_scale * (cond - uncond)
        x0 = self._x0(z, eps, t)
        a_s = self.alphas.to(z.device)[s].view(-1, 1, 1, 1).to(z.dtype)
        return a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps

    def __call__(self, student: UNet2DConditionModel, target: UNet2DConditionModel, latents: Tensor, text: Tensor,
                 t: Tensor, eps: Tensor) -> Tensor:
        s = (t - self.skip).clamp_min(0)
        z_t = self.scheduler.add_noise(latents, eps, t)
        z_s = self.solver_step(z_t, t, s, text)
        with torch.no_grad():
            goal = self.consistency(target, z_s, s, text)
        return F.mse_loss(self.consistency(student, z_t, t, text).float(), goal.float())


@torch.no_grad()
def update_target(target: nn.Module, student: nn.Module, decay: float) -> None:
    """target ← decay·target + (1 − decay)·student (LCM's target network)."""
    for p_t, p_s in zip(target.parameters(), student.parameters()):
        p_t.lerp_(p_s, 1 - decay)
