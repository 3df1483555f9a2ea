from dataclasses import dataclass, field

import pytest

from muon_ad.config import load_config
from muon_ad.errors import UserError


@dataclass
class Inner:
    steps: int = 10
    lr: float = 1e-3
    name: str = "muon"
    betas: tuple[float, ...] = (0.9, 0.95)
    limit: int | None = None


@dataclass
class Outer:
    train: Inner = field(default_factory=Inner)
    seed: int = 0


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "train:\n  steps: 5\n  lr: 1e-4\nseed: 3\n")
    cfg = load_config(Outer, path, ["train.steps=7", "train.betas=[0.8, 0.9]", "train.limit=4"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(1e-4) and cfg.seed == 3
    assert cfg.train.betas == (0.8, 0.9) and cfg.train.limit == 4
    assert load_config(Outer).train.steps == 10  # defaults alone


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("train:\n  stpes: 5\n", [], "unknown key 'train.stpes' ("),
        ("train:\n  steps: five\n", [], "'train.steps' ("),
        ("train:\n  steps: true\n", [], "'train.steps' ("),
        ("train: 3\n", [], "'train' ("),
        ("", ["train.nope=1"], "unknown key 'train.nope' (command line)"),
        ("", ["seed"], "must look like key.sub=value"),
        ("", ["seed.deeper=1"], "'seed' has no sub-keys"),
        ("train: [\n", [], "not valid YAML"),
    ],
)
def test_user_mistakes_are_one_line_naming_the_key(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as error:
        load_config(Outer, path, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)
    if "command line" not in message and "key.sub" not in message and "sub-keys" not in message:
        assert str(path) in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(Outer, tmp_path / "absent.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    from muon_ad.recipes.train_teacher import TrainTeacherConfig

    cfg = load_config(TrainTeacherConfig, Path(__file__).parents[1] / "configs" / "teacher-tiny.yaml")
    assert cfg.model.vae_channels == (16, 32, 64) and cfg.train.vae_lr == pytest.approx(1e-3)


@dataclass
class Checked:
    name: str = "muon"

    def __post_init__(self):
        if self.name not in ("muon", "adamw"):
            raise UserError(f"optimizer.name must be muon or adamw, got {self.name!r}")


@dataclass
class WithChecks:
    optimizer: Checked = field(default_factory=Checked)


def test_overrides_go_through_the_dataclass_checks_too():
    assert load_config(WithChecks, None, ["optimizer.name=adamw"]).optimizer.name == "adamw"
    with pytest.raises(UserError, match="got 'adamx'"):
        load_config(WithChecks, None, ["optimizer.name=adamx"])
