"""Quantisation-aware training (QAT) in the curriculum: torchao's PT2E flow as a `StepHook`.

When a step's plan asks for QAT (`curriculum.<phase>.qat: true`, the authors' phase 3), the hook captures the
student with `torch.export`, and `prepare_qat_pt2e` inserts fake-quantisers with the scheme the ONNX Runtime PTQ
of `compress.quant` deploys: convolutions only (`X86InductorQuantizer.set_module_type_qconfig(Conv2d, ...)`),
int8 weights symmetric per output channel, uint8 activations per tensor. The captured graph holds the student's
own Parameter objects, so the trainer's optimizer, EMA and checkpoints keep working on `student`; the hook routes
the student's training forward through the graph, so the weights learn to sit well on the int8 grid.

The deployed int8 model is then the ONNX Runtime PTQ of these QAT-trained fp32 weights (`muon-ad export
--precision int8`): the fake-quantisers' learned activation ranges are not carried over, ONNX Runtime calibrates
its own. (`convert_pt2e` of the prepared graph does export to a QDQ ONNX graph with the dynamo exporter, but at
the fixed shapes it was captured at, so it is not the deployed path.)

Shapes: one graph per training-batch shape (the curriculum's batch size at the teacher's image size); any other
call (validation, sampling: eval mode) runs the plain eager student.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from muon_ad.distill.curriculum import StepPlan


def prepare_qat(student: nn.Module, content: Tensor, style: Tensor, reduce_range: bool = False) -> torch.fx.GraphModule:
    """`student(content, style)` captured at these shapes with conv fake-quantisers inserted (torchao PT2E)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    config = get_default_x86_inductor_quantization_config(is_qat=True, reduce_range=reduce_range)
    quantizer = X86InductorQuantizer().set_module_type_qconfig(nn.Conv2d, config)
    captured = torch.export.export(_Eager(student), (content, style)).module()
    return prepare_qat_pt2e(captured, quantizer)


class _Eager(nn.Module):
    """The student's own forward, whatever its instance's `forward` has been routed to (by `QatHook`)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        return type(self.student).forward(self.student, content, style)


class QatHook:
    """The curriculum's QAT: fake-quantised training forward from the first step whose plan has `qat`."""

    prunes = False
    quantises = True

    def __init__(self) -> None:
        self.graphs: dict[tuple, torch.fx.GraphModule] = {}
        self.active = False
        self.steps = 0  # training calls that ran through a fake-quantised graph (the tests read it)

    def __call__(self, plan: StepPlan, student: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if not plan.qat or self.active:
            return
        self.active = True
        eager = student.forward

        def forward(content: Tensor, style: Tensor) -> Tensor:
            if not student.training:
                return eager(content, style)
            key = (tuple(content.shape), tuple(style.shape))
            if key not in self.graphs:
                self.graphs[key] = prepare_qat(student, content, style)  # captured in train mode, as it trains
            self.steps += 1
            return self.graphs[key](content, style)

        student.forward = forward
