import pytest
import torch

from muon_ad.distill.objective import DistillLossConfig, DistillObjective, layers_by_depth
from muon_ad.errors import UserError
from muon_ad.models.student import Student, StudentConfig
from muon_ad.models.teacher import TinyTeacherConfig, build_tiny_teacher


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    teacher = build_tiny_teacher(TinyTeacherConfig(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32),
                                                   attention_heads=2, text_dim=32, text_layers=1), ["a"]).freeze()
    student = Student(StudentConfig(base_channels=8, stem_stride=2, heads=2, style_channels=(8, 16), style_dim=16,
                                    style_grid=2, style_size=32, norm_groups=4))
    images = (torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.95  # inside ±0.99
    return teacher, student, images[:2], images[2:]


def test_layers_are_paired_by_relative_depth():
    assert layers_by_depth(3, 7) == [0, 3, 6]
    assert layers_by_depth(5, 16) == [0, 4, 8, 11, 15]  # SD-1.5's 16 layers
    assert layers_by_depth(1, 7) == [6]


def test_an_image_equal_to_its_content_has_zero_content_loss_and_gradients_reach_only_the_student(setup):
    teacher, student, content, style = setup
    objective = DistillObjective(teacher, student, DistillLossConfig())
    assert len(objective.kl_pairs) == 3 and len(objective.ad_layers) == 6
    terms = objective(student, content, style, objective.encode(content), objective.encode(style), 1.0, 1.0)
    assert torch.allclose(terms.image, content, atol=1e-6)  # untrained: returns its content
    assert terms.content.item() == pytest.approx(0.0, abs=1e-4)  # same noise as the content's references
    assert terms.ad.item() > 0.01 and terms.kl.item() > 0
    terms.loss.backward()
    assert all(p.grad is None for module in (teacher.unet, teacher.vae) for p in module.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    student.zero_grad(set_to_none=True)


def test_a_generator_makes_the_draws_repeatable(setup):
    teacher, student, content, style = setup
    objective = DistillObjective(teacher, student, DistillLossConfig())
    latents = objective.encode(content), objective.encode(style)
    with torch.no_grad():
        first, second = (objective(student, content, style, *latents, 1.0, 1.0,
                                   generator=torch.Generator().manual_seed(3)) for _ in range(2))
        other = objective(student, content, style, *latents, 1.0, 1.0, generator=torch.Generator().manual_seed(4))
    assert first.ad.item() == second.ad.item() != other.ad.item()


def test_the_objectives_are_weighted_in_one_place(setup):
    teacher, student, content, style = setup
    objective = DistillObjective(teacher, student, DistillLossConfig(kl_weight=0.5))
    latents = objective.encode(content), objective.encode(style)
    with torch.no_grad():
        terms = objective(student, content, style, *latents, style_weight=0.8, content_weight=3.0,
                          generator=torch.Generator().manual_seed(3))
    assert terms.style_objective.item() == pytest.approx(0.8 * (terms.ad.item() + 0.5 * terms.kl.item()), rel=1e-6)
    assert terms.content_objective.item() == pytest.approx(3.0 * terms.content.item(), rel=1e-6, abs=1e-9)
    assert terms.loss.item() == pytest.approx(terms.style_objective.item() + terms.content_objective.item())


def test_bad_settings_are_one_line_errors(setup):
    teacher, student, *_ = setup
    with pytest.raises(UserError, match="t_min"):
        DistillObjective(teacher, student, DistillLossConfig(t_min=500, t_max=100))
    with pytest.raises(UserError, match="kl_teacher_layers"):
        DistillObjective(teacher, student, DistillLossConfig(kl_teacher_layers=[0, 1]))
