"""Student distillation through the frozen teacher: the objective, the three-phase curriculum, the data.

The recipe that puts them together is `muon_ad.recipes.distill` (`muon-ad distill CONFIG`).
"""

from muon_ad.distill.curriculum import Curriculum, CurriculumConfig, PhaseConfig, StepHook, StepPlan, check_hooks
from muon_ad.distill.data import DistillDataConfig, LabelledBank, PairSet, build_banks
from muon_ad.distill.objective import DistillLossConfig, DistillObjective, DistillTerms, layers_by_depth

__all__ = [
    "Curriculum",
    "CurriculumConfig",
    "DistillDataConfig",
    "DistillLossConfig",
    "DistillObjective",
    "DistillTerms",
    "LabelledBank",
    "PairSet",
    "PhaseConfig",
    "StepHook",
    "StepPlan",
    "build_banks",
    "check_hooks",
    "layers_by_depth",
]
