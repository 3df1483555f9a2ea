"""Muon for whole diffusion models (conv kernels included), its AdamW split, latents, conflicts and ZeRO-1."""

from muon_ad.optim.conflict import ConflictProjection
from muon_ad.optim.hybrid import OptimizerConfig, build_optimizer, split_parameters
from muon_ad.optim.latent import LatentMuon
from muon_ad.optim.muon import Muon
from muon_ad.optim.newton_schulz import KELLER_COEFFICIENTS, POLAR_EXPRESS_COEFFICIENTS, orthogonalize
from muon_ad.optim.sharded import ShardedMuon

__all__ = [
    "KELLER_COEFFICIENTS",
    "POLAR_EXPRESS_COEFFICIENTS",
    "ConflictProjection",
    "LatentMuon",
    "Muon",
    "OptimizerConfig",
    "ShardedMuon",
    "build_optimizer",
    "orthogonalize",
    "split_parameters",
]
