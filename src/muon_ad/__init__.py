"""Muon-AD: Muon-accelerated attention distillation for real-time synthesis from a latent diffusion teacher."""

__version__ = "0.1.0"

# Where `muon-ad train-teacher configs/teacher-tiny.yaml` saves the built-in teacher; commands default to it.
DEFAULT_TEACHER = "runs/teacher-tiny/teacher"
# Where `muon-ad distill` writes its run by default; the student it trains is DEFAULT_DISTILL_DIR/student.
DEFAULT_DISTILL_DIR = "runs/stylize-cpu"
# Classifier-free guidance of text-to-image sampling everywhere (sample, guided sampling, benchmarks).
DEFAULT_GUIDANCE_SCALE = 3.0

# torchao (for QAT, compress.qat) is imported by diffusers whenever it is installed, and then logs at import time
# that its CUDA kernels and Triton are absent and that torch's pytree registers its enums natively: noise on
# every command's stderr, where a user error must be one line. Errors still come through.
import logging as _logging  # noqa: E402

for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
