"""Labelled grids keep every word of a label: long labels wrap onto extra lines instead of being cut."""

import torch

from muon_ad.visual import image_grid


def test_long_labels_wrap_instead_of_being_cut():
    images = torch.zeros(2, 3, 16, 16)
    short = image_grid(images, ["red dots", "checks"], ncols=2, scale=6)  # 96 px cells: 16 characters a line
    long = image_grid(images, ["purple and pink checks", "checks"], ncols=2, scale=6)
    assert short.size == (192, 96 + 12)
    assert long.size == (192, 96 + 2 * 12)  # "purple and pink" / "checks"
    assert image_grid(images, ncols=2).size == (64, 32)  # no labels, no label rows
