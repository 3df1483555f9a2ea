"""Non-finite losses and gradients: the step is skipped and counted, a run of them stops with one line naming
the step and the likely cause, the last good checkpoint is kept, and nothing non-finite is ever saved."""

import numpy as np
import pytest
import torch
from PIL import Image

from muon_ad.data.images import save_image_atomic
from muon_ad.errors import UserError
from muon_ad.models.student import Student, save_student
from muon_ad.models.teacher import build_tiny_teacher
from muon_ad.recipes.distill import distill
from muon_ad.recipes.train_teacher import train_teacher
from muon_ad.synthesis import texture
from muon_ad.training import NonFiniteGuard, resume_checkpoint
from test_distill_recipe import STUDENT
from test_distill_recipe import recipe as distill_recipe
from test_distill_recipe import teacher  # noqa: F401 (the module-scoped random tiny teacher fixture)
from test_teacher import recipe as teacher_recipe
from tiny import TINY_TEACHER


def test_the_guard_tolerates_isolated_bad_steps_and_stops_on_a_run_of_them():
    guard = NonFiniteGuard(3, "a learning rate too high")
    for step, finite in enumerate([True, False, False, True, False, False], start=1):
        guard.observe(step, finite)
    assert guard.skipped == 4 and guard.in_row == 2
    with pytest.raises(UserError, match=r"^step 7: .* 3 steps in a row \(likely cause: a learning rate too high\)"):
        guard.observe(7, False)


def test_teacher_with_an_absurd_lr_stops_cleanly_and_keeps_its_last_good_checkpoint(tmp_path):
    cfg = teacher_recipe(tmp_path, "run", vae_steps=12, unet_steps=0)
    cfg.train.vae_lr = 1e30
    with pytest.raises(UserError, match=r"^step \d+: loss or gradient not finite for 5 steps in a row") as error:
        train_teacher(cfg)
    assert "\n" not in str(error.value) and "train.vae_lr" in str(error.value)
    out = tmp_path / "run"
    assert not (out / "teacher").exists()  # nothing is published as a finished teacher
    vae = build_tiny_teacher(TINY_TEACHER, ["a"]).vae
    state = resume_checkpoint(out, {"vae": vae}, max_step=12)  # the last good checkpoint verifies and loads
    assert state["step"] < int(str(error.value).split(":")[0].removeprefix("step "))
    assert all(bool(t.isfinite().all()) for t in vae.state_dict().values())


def test_distillation_with_an_absurd_lr_stops_cleanly(teacher, tmp_path):
    cfg = distill_recipe(teacher, tmp_path / "run", steps=(12, 0, 0), lr=1e30)
    with pytest.raises(UserError, match=r"^step \d+: loss or gradient not finite .* curriculum"):
        distill(cfg)
    assert not (tmp_path / "run" / "student").exists()


def test_texture_with_an_absurd_lr_stops_instead_of_writing_a_black_image():
    torch.manual_seed(0)
    model = build_tiny_teacher(TINY_TEACHER, ["a"]).freeze()
    exemplar = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    with pytest.raises(UserError, match=r"not finite .* \(likely cause: a learning rate \(--lr\) too high\)"):
        texture(model, exemplar, steps=12, lr=1e30, progress=False)


def test_non_finite_models_and_images_are_never_saved(tmp_path):
    student = Student(STUDENT)
    with torch.no_grad():
        next(student.parameters())[0] = float("inf")
    with pytest.raises(UserError, match="refusing to save the student"):
        save_student(student, tmp_path / "student")
    with pytest.raises(UserError, match="refusing to save the image"):
        save_image_atomic(torch.full((3, 4, 4), float("nan")), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
