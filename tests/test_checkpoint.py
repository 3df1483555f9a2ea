import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

import muon_ad
from muon_ad.errors import UserError
from muon_ad.training.checkpoint import (
    CorruptCheckpoint,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip_of_weights_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, 7, {"model": model}, {"optimizer": optimizer.state_dict(), "rng": rng_state(), "note": (1, "a")})
    expected = (torch.rand(3), np.random.rand(2), random.random())

    torch.manual_seed(123)
    restored = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    restored_opt = torch.optim.AdamW(restored.parameters(), lr=1.0)
    folder = latest_checkpoint(tmp_path)
    assert folder is not None and folder.name == "step-0000007"
    state = load_checkpoint(folder, {"model": restored})
    restored_opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    assert state["step"] == 7 and state["note"] == (1, "a")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    assert restored_opt.param_groups[0]["lr"] == 1e-2
    for a, b in zip(optimizer.state.values(), restored_opt.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert torch.equal(torch.rand(3), expected[0]) and np.allclose(np.random.rand(2), expected[1])
    assert random.random() == expected[2]


def test_keeps_newest_and_ignores_incomplete(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"m": model}, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-0000002", "step-0000003"]
    (tmp_path / ".step-0000004.tmp-1").mkdir()  # a save that died half-way is never picked up
    assert latest_checkpoint(tmp_path).name == "step-0000003"
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def saved_run(tmp_path, steps=(3, 6)):
    """A run folder with a checkpoint per step in `steps` (kept), of a model whose weights differ by step."""
    model = torch.nn.Linear(4, 4)
    for step in steps:
        torch.nn.init.constant_(model.weight, float(step))
        save_checkpoint(tmp_path, step, {"m": model}, {"rng": rng_state()}, keep=len(steps))
    return model


def truncate(file):
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def invert_bytes(file, count=1000):
    data = bytearray(file.read_bytes())
    for i in range(min(count, len(data))):
        data[-1 - i] ^= 0xFF
    file.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated weights": lambda folder: truncate(folder / "m.safetensors"),
    "truncated state": lambda folder: truncate(folder / "state.safetensors"),
    "broken state.json": lambda folder: (folder / "state.json").write_text("{not json"),
    "1000 bytes inverted": lambda folder: invert_bytes(folder / "m.safetensors"),
    "a file deleted": lambda folder: (folder / "state.json").unlink(),
    "checksums deleted": lambda folder: (folder / "checksums.json").unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path, corrupt, caplog):
    saved_run(tmp_path)
    corrupt(tmp_path / "step-0000006")
    model = torch.nn.Linear(4, 4)
    with caplog.at_level(logging.WARNING, logger="muon_ad.training"):
        state = resume_checkpoint(tmp_path, {"m": model}, max_step=10)
    assert state["step"] == 3 and torch.equal(model.weight, torch.full((4, 4), 3.0))
    assert "step-0000006" in caplog.text and len(caplog.records) == 1 and "\n" not in caplog.records[0].message
    with pytest.raises(CorruptCheckpoint):  # loading it directly is a one-line error, not a traceback
        load_checkpoint(tmp_path / "step-0000006", {"m": model})


def test_the_latest_pointer_is_confined_to_the_run_folder(tmp_path):
    saved_run(tmp_path / "other-run", steps=(100,))
    saved_run(tmp_path / "run")
    (tmp_path / "run" / "latest").write_text("../other-run/step-0000100")
    with pytest.raises(UserError, match="must be a step-NNNNNNN checkpoint folder of this run"):
        resume_checkpoint(tmp_path / "run", {"m": torch.nn.Linear(4, 4)}, max_step=1000)


def test_a_pointer_to_a_missing_folder_warns_and_resumes_from_the_newest_good_one(tmp_path, caplog):
    saved_run(tmp_path)
    (tmp_path / "latest").write_text("step-0000009")
    with caplog.at_level(logging.WARNING, logger="muon_ad.training"):
        assert resume_checkpoint(tmp_path, {"m": torch.nn.Linear(4, 4)}, max_step=10)["step"] == 6
    assert "missing or incomplete" in caplog.text


def test_step_counts_are_validated(tmp_path):
    saved_run(tmp_path)
    with pytest.raises(UserError, match="at step 6, beyond this run's 5 steps"):
        resume_checkpoint(tmp_path, {"m": torch.nn.Linear(4, 4)}, max_step=5)
    # An edited step (checksums recomputed, so only the value gives it away) does not match its folder.
    folder = tmp_path / "step-0000006"
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps(dict(state, step=1e9)))
    sums = json.loads((folder / "checksums.json").read_text())
    sums["state.json"] = hashlib.sha256((folder / "state.json").read_bytes()).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(sums))
    assert resume_checkpoint(tmp_path, {"m": torch.nn.Linear(4, 4)}, max_step=10)["step"] == 3


def test_stale_temporaries_are_removed_at_start_and_on_failure(tmp_path, monkeypatch):
    saved_run(tmp_path)
    (tmp_path / ".step-0000009.tmp-12345").mkdir()  # a save killed by kill -9
    (tmp_path / ".step-0000009.tmp-12345" / "m.safetensors").write_bytes(b"half")
    (tmp_path / ".samples.png.abcd.tmp").write_bytes(b"half")
    resume_checkpoint(tmp_path, {"m": torch.nn.Linear(4, 4)}, max_step=10)
    assert not list(tmp_path.glob(".*"))

    def disk_full(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("muon_ad.training.checkpoint.save_file", disk_full)
    for _ in range(2):  # each retry fails the same way, and leaks nothing
        with pytest.raises(UserError, match="No space left on device") as error:
            save_checkpoint(tmp_path, 9, {"m": torch.nn.Linear(4, 4)}, {})
        assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-0000003", "step-0000006"]
    assert (tmp_path / "latest").read_text() == "step-0000006"
    monkeypatch.undo()
    assert resume_checkpoint(tmp_path, {"m": torch.nn.Linear(4, 4)}, max_step=10)["step"] == 6


FULL_DISK = """
import sys, torch
from muon_ad.errors import UserError
from muon_ad.training.checkpoint import resume_checkpoint, save_checkpoint
model = torch.nn.Linear(64, 64)  # 16 KB of weights: a 100 KB disk holds a few checkpoints, not many
step = 0
try:
    while True:
        step += 1
        save_checkpoint(sys.argv[1], step, {"m": model}, {}, keep=1000)
except UserError as error:
    print(step, error, sep="\\n")
print(resume_checkpoint(sys.argv[1], {"m": model}, max_step=step)["step"])
import pathlib
print(len(list(pathlib.Path(sys.argv[1]).glob(".*"))))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a small tmpfs")
def test_a_really_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(muon_ad.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    script = f"mount -t tmpfs -o size=100k none {disk} && {sys.executable} -c '{FULL_DISK}' {disk}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                            timeout=120)
    if "mount" in result.stderr and result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    failed_at, message, resumed, temporaries = result.stdout.strip().splitlines()
    assert "No space left on device" in message and "Traceback" not in result.stderr, result.stderr
    # The newest complete checkpoint: the failed one, when only the `latest` pointer after it did not fit.
    assert int(resumed) == int(failed_at) - ("/latest:" not in message)
    assert temporaries == "0"  # nothing half-written remains


def test_non_finite_weights_are_never_saved(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="'weight' holds NaN or infinite values"):
        save_checkpoint(tmp_path, 1, {"m": model}, {})
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_a_checkpoint_of_another_shape_says_what_differs_and_what_to_do(tmp_path):
    folder = save_checkpoint(tmp_path, 3, {"m": torch.nn.Linear(4, 4)}, {})
    with pytest.raises(UserError) as error:
        load_checkpoint(folder, {"m": torch.nn.Linear(4, 8)})
    message = str(error.value)
    assert "size mismatch for weight" in message and "start in another output folder" in message
    assert "Error(s) in loading" not in message and len(message.splitlines()) == 1
