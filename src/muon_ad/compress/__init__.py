"""Compression of the stylisation student: structured pruning with physical compaction (`prune`), mixed-precision
int8 quantisation (`quant`: post-training, by ONNX Runtime; `qat`: quantisation-aware training in the curriculum's
phase 3)."""

from muon_ad.compress.prune import compact, load_pruned, plan_masks, plan_pruning, prune_student, save_pruned

__all__ = ["compact", "load_pruned", "plan_masks", "plan_pruning", "prune_student", "save_pruned"]
