"""Muon-AD: Muon-accelerated attention distillation for real-time synthesis from a latent diffusion teacher."""

__version__ = "0.1.0"

# Where `muon-ad train-teacher configs/teacher-tiny.yaml` saves the built-in teacher; commands default to it.
DEFAULT_TEACHER = "runs/teacher-tiny/teacher"
# Where `muon-ad distill` writes its run by default; the student it trains is DEFAULT_DISTILL_DIR/student.
DEFAULT_DISTILL_DIR = "runs/stylize-cpu"
# Classifier-free guidance of text-to-image sampling everywhere (sample, guided sampling, benchmarks).
DEFAULT_GUIDANCE_SCALE = 3.0
