"""The teacher loader reads a diffusers SD-1.5-layout folder offline; the tiny recipe trains and resumes."""

import csv
import json
import os
import signal

import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from muon_ad.errors import UserError
from muon_ad.models.teacher import Teacher, load_teacher, save_teacher
from muon_ad.recipes.train_teacher import TeacherDataConfig, TeacherTrainConfig, TrainTeacherConfig, train_teacher
from tiny import TINY_TEACHER


def sd15_style_folder(tmp_path):
    """A miniature of what users download: CLIP BPE tokenizer, PNDM scheduler, saved by StableDiffusionPipeline."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "r": 2, "e": 3, "d": 4, "d</w>": 5, "re": 6, "red</w>": 7}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=8)
    torch.manual_seed(0)
    teacher = Teacher(
        unet=UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                  cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8),
        vae=AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8),
        text_encoder=CLIPTextModel(CLIPTextConfig(vocab_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                  num_attention_heads=2, max_position_embeddings=8)),
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True),
    )
    folder = tmp_path / "sd"
    teacher.pipeline().save_pretrained(folder)
    return teacher, folder


def test_sd15_layout_folder_loads_offline_and_matches(tmp_path):
    original, folder = sd15_style_folder(tmp_path)
    loaded = load_teacher(folder)
    assert type(loaded.tokenizer).__name__.startswith("CLIPTokenizer")
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"  # SD ships PNDM; we sample with DDIM
    assert loaded.image_size == 16 and not any(p.requires_grad for p in loaded.unet.parameters())
    latents, t = torch.randn(1, 4, 8, 8), torch.tensor([10])
    with torch.no_grad():
        expected = original.unet(latents, t, original.encode_prompts(["red"])).sample
        got = loaded.unet(latents, t, loaded.encode_prompts(["red"])).sample
    assert torch.allclose(expected, got, atol=1e-6)
    images = loaded.sample(["red"], steps=2, guidance_scale=2.0)
    assert images.shape == (1, 3, 16, 16) and images.min() >= -1 and images.max() <= 1


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="teacher folder not found"):
        load_teacher(tmp_path / "absent")
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(UserError, match="missing vae/, text_encoder/, tokenizer/, scheduler/"):
        load_teacher(tmp_path / "half")


def recipe(tmp_path, name, vae_steps=6, unet_steps=6):
    return TrainTeacherConfig(
        model=TINY_TEACHER,
        data=TeacherDataConfig(textures=20, scenes=4, photos=4, size=32),
        train=TeacherTrainConfig(out_dir=str(tmp_path / name), vae_steps=vae_steps, unet_steps=unet_steps, batch_size=4,
                                 vae_crop=16, warmup_steps=1, checkpoint_every=3, sample_steps=2),
    )


def losses(folder, phase):
    with open(folder / "log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f) if row["phase"] == phase]


def test_training_lowers_the_loss_and_saves_a_loadable_teacher(tmp_path):
    cfg = recipe(tmp_path, "run", vae_steps=40, unet_steps=40)
    cfg.data.textures, cfg.data.photos = 4, 0  # a tiny bank, so forty steps visibly fit it
    cfg.train.vae_lr = cfg.train.unet_lr = 3e-3
    folder = train_teacher(cfg)
    out = tmp_path / "run"
    for phase in ("vae", "unet"):
        curve = losses(out, phase)
        assert sum(curve[-10:]) < 0.85 * sum(curve[:10]), (phase, curve)
    assert (out / "samples.png").is_file()
    teacher = load_teacher(folder)
    assert teacher.image_size == 32 and teacher.vae.config.scaling_factor != 0.18215  # measured, not SD's constant


@pytest.mark.parametrize("stop_at", [4, 8])  # in the autoencoder phase, and in the UNet phase
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, stop_at):
    reference = load_teacher(train_teacher(recipe(tmp_path, "straight")))

    def interrupt(step):
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the run saves at the end of this step and stops

    cfg = recipe(tmp_path, "interrupted")
    with pytest.raises(KeyboardInterrupt):
        train_teacher(cfg, on_step=interrupt)
    assert (tmp_path / "interrupted" / "latest").read_text() == f"step-{stop_at:07d}"
    resumed = load_teacher(train_teacher(cfg))
    for a, b in ((reference.unet, resumed.unet), (reference.vae, resumed.vae), (reference.text_encoder, resumed.text_encoder)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    rows = losses(tmp_path / "interrupted", "vae") + losses(tmp_path / "interrupted", "unet")
    assert len(rows) == 12  # every step logged once
