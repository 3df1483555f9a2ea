"""Training checkpoints as safetensors + JSON, written atomically, loaded without unpickling.

A checkpoint is a folder `step-0001200/` holding one `<name>.safetensors` per model, and `state.json` +
`state.safetensors` for everything else (optimizer, lr scheduler, RNG, step, config). Nested states
are split generically: tensors go to safetensors under their dotted path, the rest to JSON. The folder
is written under a temporary name and renamed, and the `latest` pointer is replaced atomically, so an
interrupted save never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from muon_ad.errors import UserError
from muon_ad.io import write_text_atomic

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INT_KEYS = "__int_keys__"


def rng_state() -> dict[str, Any]:
    """Every random stream a training run draws from, so a resumed run continues identically."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(legacy=False),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    directory: str | Path,
    step: int,
    models: dict[str, torch.nn.Module],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Save models and a nested training `state` (optimizer/scheduler state_dicts, RNG, ...) for `step`.

    Keeps the newest `keep` checkpoints and returns the new checkpoint's folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:07d}"
    tmp = directory / f".step-{step:07d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, model in models.items():
        save_model(model, str(tmp / f"{name}.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    meta = _split(dict(state, step=step), "", tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(directory / "latest", final.name)
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The folder the `latest` pointer names, or None when there is no complete checkpoint."""
    pointer = Path(directory) / "latest"
    if not pointer.is_file():
        return None
    folder = Path(directory) / pointer.read_text().strip()
    return folder if (folder / "state.json").is_file() else None


def load_checkpoint(folder: str | Path, models: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Load weights into `models` in place and return the training state (with its `step`)."""
    folder = Path(folder)
    if not (folder / "state.json").is_file():
        raise UserError(f"not a checkpoint folder (no state.json): {folder}")
    for name, model in models.items():
        file = folder / f"{name}.safetensors"
        if not file.is_file():
            raise UserError(f"checkpoint {folder} has no weights for '{name}'")
        load_model(model, str(file))
    tensors = load_file(str(folder / "state.safetensors"))
    return _join(json.loads((folder / "state.json").read_text()), tensors)


def _split(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu()
        return {_TENSOR: path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
        return {_TENSOR: path, "numpy": True}
    if isinstance(value, dict):
        split = {str(k): _split(v, f"{path}.{k}" if path else str(k), tensors) for k, v in value.items()}
        if value and all(isinstance(k, int) for k in value):
            split[_INT_KEYS] = True  # optimizer states are keyed by parameter index
        return split
    if isinstance(value, tuple):
        return {_TUPLE: [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            tensor = tensors[value[_TENSOR]]
            return tensor.numpy() if value.get("numpy") else tensor
        if _TUPLE in value:
            return tuple(_join(v, tensors) for v in value[_TUPLE])
        int_keys = value.pop(_INT_KEYS, False)
        return {(int(k) if int_keys else k): _join(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value
