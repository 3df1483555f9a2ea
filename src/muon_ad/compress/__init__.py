"""Compression of the stylisation student: structured pruning with physical compaction (`prune`)."""

from muon_ad.compress.prune import compact, load_pruned, plan_masks, plan_pruning, prune_student, save_pruned

__all__ = ["compact", "load_pruned", "plan_masks", "plan_pruning", "prune_student", "save_pruned"]
