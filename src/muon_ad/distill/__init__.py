"""Student distillation through the frozen teacher: the losses, the three-phase curriculum, the data.

The recipe that puts them together is `muon_ad.recipes.distill` (`muon-ad distill CONFIG`).
"""

from muon_ad.distill.curriculum import Curriculum, CurriculumConfig, PhaseConfig, StepPlan
from muon_ad.distill.data import DistillDataConfig, LabelledBank, build_banks
from muon_ad.distill.losses import DistillLossConfig, TeacherLosses, layers_by_depth

__all__ = [
    "Curriculum",
    "CurriculumConfig",
    "DistillDataConfig",
    "DistillLossConfig",
    "LabelledBank",
    "PhaseConfig",
    "StepPlan",
    "TeacherLosses",
    "build_banks",
    "layers_by_depth",
]
