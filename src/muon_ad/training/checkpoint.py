"""Training checkpoints as safetensors + JSON, written atomically, verified on load, loaded without unpickling.

A checkpoint is a folder `step-0001200/` holding one `<name>.safetensors` per model, and `state.json` +
`state.safetensors` for everything else (optimizer, lr scheduler, RNG, step, config), and `checksums.json`
(SHA-256 of each of those files). Nested states are split generically: tensors go to safetensors under
their dotted path, the rest to JSON. The folder is written under a temporary name and renamed, and the
`latest` pointer is replaced atomically, so an interrupted save never leaves a checkpoint that looks
complete. Resuming takes the newest checkpoint whose checksums hold, warning about any it skips: a
truncated or bit-flipped file costs the steps since the previous checkpoint, not the run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from muon_ad.checks import finite_tensors
from muon_ad.errors import UserError
from muon_ad.io import (
    checksum_problem,
    remove_stale_temporaries,
    write_checksums,
    write_folder_atomic,
    write_text_atomic,
)

log = logging.getLogger("muon_ad.training")

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INT_KEYS = "__int_keys__"
_STEP_FOLDER = re.compile(r"step-\d{7}")


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

    Keeps the newest `keep` checkpoints and returns the new checkpoint's folder. Refuses non-finite values;
    a failed write (e.g. a full disk) removes its temporary folder and is one line, the previous checkpoint intact.
    """
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    meta = _split(dict(state, step=step), "", tensors)
    for name, model in models.items():
        finite_tensors(f"checkpoint step {step} ('{name}')", model.state_dict())
    finite_tensors(f"checkpoint step {step} (training state)", tensors)

    def write(folder: Path) -> None:
        for name, model in models.items():
            save_model(model, str(folder / f"{name}.safetensors"))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "state.safetensors"))
        (folder / "state.json").write_text(json.dumps(meta))
        write_checksums(folder)

    final = write_folder_atomic(directory / f"step-{step:07d}", write)
    try:
        write_text_atomic(directory / "latest", final.name)
    except OSError as error:  # the new folder is complete and verified: resuming finds it without the pointer
        raise UserError(f"cannot write {directory / 'latest'}: {error.strerror or error}") from None
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The folder the `latest` pointer names, or None when there is none or it is missing.

    The pointer must name a `step-NNNNNNN` folder of `directory` itself: a path leading elsewhere (another
    run's checkpoint) is refused with one line, never followed."""
    pointer = Path(directory) / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_bytes().decode(errors="replace").strip()  # garbage in it is refused below, not a traceback
    if not _STEP_FOLDER.fullmatch(name):
        raise UserError(f"{pointer} names {name!r}: it must be a step-NNNNNNN checkpoint folder of this run")
    folder = Path(directory) / name
    return folder if folder.is_dir() else None


def resume_checkpoint(directory: str | Path, models: dict[str, torch.nn.Module], max_step: int) -> dict[str, Any] | None:
    """Load the newest good checkpoint of a run into `models` and return its state, or None to start afresh.

    Removes stale temporary folders (a save killed half-way), checks the `latest` pointer, then tries the
    checkpoints newest first: one that is corrupt or incomplete is skipped with a one-line warning. A step
    beyond `max_step` (the run's length) is refused: the config changed, or the file was edited.
    """
    directory = Path(directory)
    remove_stale_temporaries(directory)
    if latest_checkpoint(directory) is None and (directory / "latest").is_file():
        log.warning("%s names a missing or incomplete checkpoint; looking for the newest good one", directory / "latest")
    for folder in sorted(directory.glob("step-*"), reverse=True):
        try:
            state = load_checkpoint(folder, models)
        except CorruptCheckpoint as error:
            log.warning("skipping unusable checkpoint: %s", error)
            continue
        if state["step"] > max_step:
            raise UserError(f"checkpoint {folder} is at step {state['step']}, beyond this run's {max_step} steps "
                            "(use a new out_dir, or the config it was trained with)")
        log.info("resuming from %s (step %d of %d)", folder, state["step"], max_step)
        return state
    return None


class CorruptCheckpoint(UserError):
    """A checkpoint folder whose files are missing, truncated or altered since it was written."""


def load_checkpoint(folder: str | Path, models: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Verify the checkpoint's checksums, load weights into `models` in place and return the training state
    (with its `step`). Nothing is loaded from a folder that fails verification."""
    folder = Path(folder)
    required = ("state.json", "state.safetensors", *(f"{name}.safetensors" for name in models))
    if problem := checksum_problem(folder, required):
        raise CorruptCheckpoint(f"{folder}: {problem}")
    for name, model in models.items():
        try:
            load_model(model, str(folder / f"{name}.safetensors"))
        except RuntimeError as error:
            # torch's first line only names the model ("Error(s) in loading state_dict for ..."); the next, what differs
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            differs = (lines[1:] or lines)[0][:160]
            raise UserError(f"checkpoint {folder} does not fit this run's '{name}' ({differs}): resume with the "
                            "config it was made with, or start in another output folder") from None
    state = _join(json.loads((folder / "state.json").read_text()), load_file(str(folder / "state.safetensors")))
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or f"step-{step:07d}" != folder.name:
        raise CorruptCheckpoint(f"{folder}/state.json: step {step!r} does not match the folder name")
    return state


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
