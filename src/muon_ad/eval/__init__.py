"""Metrics: FID/KID (Inception, or FID-domain offline), SSIM/PSNR, model cost (params, FLOPs, time, memory), and
whether a teacher draws what it is prompted for (`recognition`)."""

from muon_ad.eval.domain_features import DomainFeatures, train_domain_features
from muon_ad.eval.evaluate import evaluate_images, load_images, to_markdown
from muon_ad.eval.fid import (
    FID_LABELS,
    FeatureExtractor,
    compute_fid,
    compute_kid,
    extract_features,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    load_feature_extractor,
)
from muon_ad.eval.inception import FIDInceptionV3, load_fid_inception
from muon_ad.eval.profile import count_flops, count_parameters, measure_latency, peak_memory_mb
from muon_ad.eval.quality import psnr, ssim

__all__ = [
    "FID_LABELS",
    "DomainFeatures",
    "FIDInceptionV3",
    "FeatureExtractor",
    "compute_fid",
    "compute_kid",
    "count_flops",
    "count_parameters",
    "evaluate_images",
    "extract_features",
    "fid_from_features",
    "frechet_distance",
    "kid_from_features",
    "load_feature_extractor",
    "load_fid_inception",
    "load_images",
    "measure_latency",
    "peak_memory_mb",
    "psnr",
    "ssim",
    "to_markdown",
    "train_domain_features",
]
