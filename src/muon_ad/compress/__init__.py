<<<<<<< HEAD
"""Compression of the stylisation student: structured pruning with physical compaction (`prune`)."""

from muon_ad.compress.prune import compact, load_pruned, plan_masks, plan_pruning, prune_student, save_pruned

__all__ = ["compact", "load_pruned", "plan_masks", "plan_pruning", "prune_student", "save_pruned"]
=======
"""Compression of the student: mixed-precision int8 quantisation (`compress.quant`: post-training, by ONNX Runtime;
`compress.qat`: quantisation-aware training in the curriculum's phase 3)."""
>>>>>>> quant
