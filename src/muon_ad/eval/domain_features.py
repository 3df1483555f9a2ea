"""A small feature extractor trained on the built-in data, for FID/KID when Inception weights are absent.

FID only needs an embedding in which images of the target domain cluster meaningfully. Offline there is
no pretrained Inception, so the project trains a small CNN as a classifier on the dataset's `label`
field and uses its pooled penultimate activations, exactly as FID uses Inception's pool features.
Numbers from it are *not* comparable with published FIDs; they are always reported as "FID-domain".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from muon_ad.errors import UserError
from muon_ad.io import write_folder_atomic


class DomainFeatures(nn.Module):
    """CNN embedding: (B,3,H,W) in [-1,1], resized to `size`, to (B, widths[-1]) features.

    `labels` are the class names it was trained to tell apart (kept so a saved extractor says what it knows).
    `widths` are the channels of each stage (multiples of 8, for GroupNorm); each stage after the first halves
    the resolution.
    """

    def __init__(self, labels: Sequence[str], widths: Sequence[int] = (32, 64, 128, 256), size: int = 64) -> None:
        super().__init__()
        self.labels, self.widths, self.size = [str(label) for label in labels], list(widths), size
        self.num_features = self.widths[-1]  # read by torchmetrics instead of probing with a dummy image
        layers: list[nn.Module] = []
        for cin, cout, stride in zip([3] + self.widths, self.widths, [1] + [2] * (len(self.widths) - 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.num_features, len(self.labels))  # used only while training

    def forward(self, x: Tensor) -> Tensor:
        return self.stage_maps(x)[-1].mean(dim=(2, 3))

    def stage_maps(self, x: Tensor) -> list[Tensor]:
        """The feature maps (B, widths[k], h, w) after each stage: the intermediate features style statistics use."""
        if x.shape[-2:] != (self.size, self.size):
            # Antialiased, so large inputs are not aliased into textures they do not contain.
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        maps = []
        for k in range(0, len(self.body), 3):  # each stage is conv, norm, activation
            x = self.body[k : k + 3](x)
            maps.append(x)
        return maps

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self(x))

    def save(self, path: str | Path) -> None:
        """Write `path/` with model.safetensors and config.json, atomically (temporary folder, then rename)."""
        config = {"labels": self.labels, "widths": self.widths, "size": self.size}

        def write(tmp: Path) -> None:
            save_model(self, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(config, indent=2))

        write_folder_atomic(path, write)

    @classmethod
    def load(cls, path: str | Path) -> DomainFeatures:
        """A saved extractor, frozen and in eval mode."""
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise UserError(f"not a domain feature extractor folder (needs config.json + model.safetensors): {path}")
        with torch.random.fork_rng(devices=[]):  # initial weights, overwritten below, must not use the caller's stream
            model = cls(**json.loads((path / "config.json").read_text()))
        load_model(model, str(path / "model.safetensors"))
        return model.eval().requires_grad_(False)


def train_domain_features(
    dataset: Sequence[dict],
    steps: int = 300,
    batch_size: int = 32,
    seed: int = 0,
    widths: Sequence[int] = (32, 64, 128, 256),
    size: int = 64,
    lr: float = 2e-3,
) -> DomainFeatures:
    """Train a `DomainFeatures` to classify `item["label"]`; items hold `image` (3,H,W) in [-1,1].

    The whole set is resized to `size` once up front: the built-in sets are small, and this makes each
    step a cheap tensor gather instead of re-rendering images. Seeded and free of global RNG side effects.
    """
    images, targets = [], []
    for i in range(len(dataset)):  # map-style datasets need not be iterable
        item = dataset[i]
        image = item["image"].unsqueeze(0).float()
        images.append(F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
        targets.append(item["label"])
    classes = sorted(set(targets))
    if len(classes) < 2:
        raise UserError(f"a domain feature extractor needs at least 2 labels in the dataset, found {classes}")
    x = torch.cat(images)
    y = torch.tensor([classes.index(target) for target in targets])
    names = getattr(dataset, "class_names", None)  # readable names for integer labels, when the set has them
    labels = [names[c] if names is not None and isinstance(c, int) else str(c) for c in classes]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainFeatures(labels, widths, size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        for _ in range(steps):
            index = torch.randint(len(x), (batch_size,))
            batch = x[index]
            flip = torch.rand(batch_size) < 0.5  # textures and scenes keep their class when mirrored
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = F.cross_entropy(model.logits(batch), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)
