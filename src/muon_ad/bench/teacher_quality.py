"""`muon-ad bench teacher-quality`: does the teacher draw the texture family and palette it is prompted for?

Side by side, the same two judges (classifiers trained on real procedural textures, `eval.recognition`)
score three sets of images: held-out real textures (the ceiling), those real textures after the
teacher's autoencoder round trip (what the VAE alone loses; also as PSNR), and the teacher's text-to-image samples
(the figure). Chance is 1/12 for the family and 1/8 for the palette.

Colour fidelity (`eval.colour`): the colour cast of the autoencoder round trip, as the CIELAB ΔE of each image's mean
colour, on held-out greys and grey textures (`colour_error_grey`) and on photo-like images in natural colours
(`colour_error_natural`); `_constant` is what returning mid-grey scores (the do-nothing baseline; identity is 0).
"""

from __future__ import annotations

import torch

from muon_ad import DEFAULT_GUIDANCE_SCALE, DEFAULT_TEACHER
from muon_ad.bench.common import BenchOutput, require_teacher
from muon_ad.data.procedural import PALETTES, TEXTURE_FAMILIES
from muon_ad.eval.colour import round_trip_colour_errors
from muon_ad.eval.quality import psnr
from muon_ad.eval.recognition import accuracy, judge, real_textures, teacher_samples, train_judges
from muon_ad.models.teacher import load_teacher


def run(quick: bool, device: str) -> BenchOutput:
    require_teacher(DEFAULT_TEACHER)
    teacher = load_teacher(DEFAULT_TEACHER, device=device)
    size = teacher.image_size
    config = {"teacher": DEFAULT_TEACHER, "image_size": size, "guidance_scale": DEFAULT_GUIDANCE_SCALE,
              "judge_images": 600 if quick else 2400, "judge_steps": 150 if quick else 1000, "judge_seed": 0,
              "real_images": 120 if quick else 480, "real_seed": 1,
              "samples_per_family": 2 if quick else 16, "sampling_steps": 15 if quick else 30, "sample_seed": 0,
              "colour_images": 64 if quick else 256, "colour_seed": 0}
    judges = train_judges(config["judge_images"], size, config["judge_steps"], config["judge_seed"])
    real, truth = real_textures(config["real_images"], size, config["real_seed"])

    def round_trip(images: torch.Tensor) -> torch.Tensor:
        return teacher.decode_latents(teacher.encode_images(images)).cpu()

    with torch.no_grad():
        reconstructed = round_trip(real)
    samples, asked = teacher_samples(teacher, config["samples_per_family"], config["sampling_steps"],
                                     DEFAULT_GUIDANCE_SCALE, config["sample_seed"])
    scores = {"real": accuracy(judge(judges, real), truth), "vae": accuracy(judge(judges, reconstructed), truth),
              "samples": accuracy(judge(judges, samples.cpu()), asked)}
    metrics: dict[str, float] = {"family_accuracy": scores["samples"]["family"],
                                 "palette_accuracy": scores["samples"]["palette"]}
    for kind in ("real", "vae"):
        metrics[f"family_accuracy_{kind}"] = scores[kind]["family"]
        metrics[f"palette_accuracy_{kind}"] = scores[kind]["palette"]
    metrics["autoencoder_psnr_db"] = psnr(reconstructed, real)  # what the VAE round trip loses, in pixels
    with torch.no_grad():
        colour = round_trip_colour_errors(round_trip, config["colour_images"], size, config["colour_seed"])
    constant = round_trip_colour_errors(torch.zeros_like, config["colour_images"], size, config["colour_seed"])
    metrics.update(colour)
    metrics.update({f"colour_error_{kind}_constant": constant[f"colour_error_{kind}"] for kind in ("grey", "natural")})
    metrics["family_chance"] = 1 / len(TEXTURE_FAMILIES)
    metrics["palette_chance"] = 1 / len(PALETTES)
    metrics.update({key: value for key, value in scores["samples"].items() if key.startswith("family_")})
    baseline = ("the same judges on held-out real textures (_real, the ceiling) and on their autoencoder round trip "
                "(_vae); chance = family_chance / palette_chance; colour errors: identity 0, constant mid-grey _constant")
    return BenchOutput(config=config, metrics=metrics, baseline=baseline)
