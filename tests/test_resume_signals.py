"""Exact resume after a real interruption: a training subprocess gets SIGINT or SIGKILL part-way (at a point
drawn from a seed, landing wherever in a step the signal arrives), is resumed, and must end with weights
bit-identical to an uninterrupted run, for both recipes."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import muon_ad
from muon_ad.config import save_config
from muon_ad.recipes.distill import distill
from muon_ad.recipes.train_teacher import train_teacher
from test_distill_recipe import recipe as distill_recipe
from test_distill_recipe import teacher  # noqa: F401 (the module-scoped random tiny teacher fixture)
from test_teacher import recipe as teacher_recipe

DEADLINE_S = 180
# Random interruption points per signal and recipe; a sweep for more: RESUME_SEEDS=5 pytest tests/test_resume_signals.py
SEEDS = range(int(os.environ.get("RESUME_SEEDS", 2)))


def signal_cases(special: str) -> list:
    """SIGINT at each seed's point; SIGKILL at all but one, and at the recipe's riskiest moment (`special`)."""
    cases = [(signal.SIGINT, seed) for seed in SEEDS] + [(signal.SIGKILL, seed) for seed in SEEDS[:-1]]
    return [pytest.param(sig, seed, id=f"{sig.name}-{seed}") for sig, seed in (*cases, (signal.SIGKILL, special))]


def logged_steps(out: Path) -> list[int]:
    try:
        with open(out / "log.csv") as f:
            return [int(row["step"]) for row in csv.DictReader(f)]
    except (FileNotFoundError, ValueError, KeyError):
        return []


def interrupted_run(command: str, cfg, out: Path, rows: int, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Run `muon-ad COMMAND` on `cfg` in a subprocess and send `sig` once its log has `rows` steps."""
    config = out.parent / f"{out.name}.yaml"
    save_config(cfg, config)
    env = dict(os.environ, OMP_NUM_THREADS="1",  # the same single thread as this process: same float sums
               PYTHONPATH=os.pathsep.join([str(Path(muon_ad.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    with open(out.parent / f"{out.name}.stderr", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "muon_ad", command, str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + DEADLINE_S
        while len(logged_steps(out)) < rows and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before step {rows}: {proc.returncode}"
        proc.send_signal(sig)
        try:
            proc.wait(timeout=DEADLINE_S)
        finally:
            proc.kill()
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", err.read())


def check_interruption(result: subprocess.CompletedProcess, out: Path, sig: signal.Signals) -> None:
    if sig == signal.SIGKILL:
        assert result.returncode == -signal.SIGKILL
        return
    assert result.returncode == 130, result.stderr[-2000:]
    assert "interrupted at step" in result.stderr and "muon-ad: interrupted" in result.stderr
    # Saved at a step boundary: the checkpoint is the last step the run logged, not half of the next.
    assert (out / "latest").read_text() == f"step-{logged_steps(out)[-1]:07d}"


def weights(folder: Path) -> dict:
    return {f"{file.parent.name}/{name}": tensor for file in sorted(folder.rglob("*.safetensors"))
            for name, tensor in load_file(str(file)).items()}


def assert_identical(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert tensor.equal(got[name]), name


TEACHER_STEPS = 20  # per phase; checkpoints every 4


@pytest.fixture(scope="module")
def straight_teacher(tmp_path_factory):
    cfg = teacher_recipe(tmp_path_factory.mktemp("straight"), "run", TEACHER_STEPS, TEACHER_STEPS)
    cfg.train.checkpoint_every = 4
    return weights(train_teacher(cfg))


# SIGKILL at the end of the autoencoder phase lands between its last checkpoint and the UNet phase's first.
@pytest.mark.parametrize("sig, seed", signal_cases("phase-window"))
def test_teacher_resumes_bit_identical_after_a_signal(straight_teacher, tmp_path, sig, seed):
    rows = TEACHER_STEPS if seed == "phase-window" else random.Random(seed).randint(2, 2 * TEACHER_STEPS - 8)
    cfg = teacher_recipe(tmp_path, "run", TEACHER_STEPS, TEACHER_STEPS)
    cfg.train.checkpoint_every = 4
    out = tmp_path / "run"
    check_interruption(interrupted_run("train-teacher", cfg, out, rows, sig), out, sig)
    assert_identical(straight_teacher, weights(train_teacher(cfg)))
    assert not list(out.glob(".*tmp*"))  # what a kill mid-save leaves is removed on resume


DISTILL_STEPS = (6, 6, 6)  # checkpoints every 4


@pytest.fixture(scope="module")
def straight_student(teacher, tmp_path_factory):
    cfg = distill_recipe(teacher, tmp_path_factory.mktemp("straight") / "run", steps=DISTILL_STEPS)
    cfg.train.checkpoint_every = 4
    return weights(distill(cfg))


# SIGKILL before the first checkpoint: the rerun loads the cached FID-domain extractor instead of training it.
@pytest.mark.parametrize("sig, seed", signal_cases("before-first-checkpoint"))
def test_distillation_resumes_bit_identical_after_a_signal(teacher, straight_student, tmp_path, sig, seed):
    rows = 1 if seed == "before-first-checkpoint" else random.Random(seed).randint(2, sum(DISTILL_STEPS) - 5)
    out = tmp_path / "run"
    cfg = distill_recipe(teacher, out, steps=DISTILL_STEPS)
    cfg.train.checkpoint_every = 4
    check_interruption(interrupted_run("distill", cfg, out, rows, sig), out, sig)
    assert_identical(straight_student, weights(distill(cfg)))
    assert not list(out.glob(".*tmp*"))
