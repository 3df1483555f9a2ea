"""The curriculum's QAT hook (torchao PT2E): the training forward runs fake-quantised convolutions on the student's
own parameters; eval mode and the saved weights stay the plain student."""

import torch

from muon_ad.compress.qat import QatHook
from muon_ad.distill.curriculum import Curriculum, CurriculumConfig, PhaseConfig, check_hooks
from muon_ad.models.student import Student, StudentConfig

TINY = StudentConfig(base_channels=8, channel_mult=(1, 2), stem_stride=2, heads=2, style_channels=(8, 16),
                     style_dim=16, style_grid=2, style_size=32, norm_groups=4)


def test_qat_hook_fake_quantises_phase_three_and_trains_the_student():
    torch.manual_seed(0)
    student = Student(TINY)
    torch.nn.init.normal_(student.output_layer.weight, std=0.05)
    cfg = CurriculumConfig(PhaseConfig(steps=1, batch_size=2), PhaseConfig(steps=0, batch_size=2),
                           PhaseConfig(steps=3, batch_size=2, qat=True), warmup_steps=0)
    hook = QatHook()
    check_hooks(cfg, [hook])  # the curriculum's qat request is now performed
    curriculum, optimizer = Curriculum(cfg), torch.optim.Adam(student.parameters(), 1e-3)
    content, style = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    before = {k: v.clone() for k, v in student.state_dict().items()}
    for step in range(4):
        plan = curriculum.plan(step)
        hook(plan, student, optimizer)
        student.train()
        if step == 1:  # the first QAT step: fake-quantised output differs from the eager one, but only a little
            with torch.no_grad():
                eager = type(student).forward(student, content, style)
        loss = (student(content, style) - content.flip(-1)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1:
            with torch.no_grad():
                gap = (hook.graphs[next(iter(hook.graphs))](content, style) - type(student).forward(student, content, style))
            assert 1e-5 < gap.abs().max() < 0.5
    assert hook.steps == 3 and len(hook.graphs) == 1  # phase 1 ran eager, phase 3 through the fake-quantised graph
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items() if "head" in k)
    assert set(student.state_dict()) == set(before)  # no observer state leaks into the saved student
    student.eval()
    with torch.no_grad():
        assert torch.equal(student(content, style), type(student).forward(student, content, style))
