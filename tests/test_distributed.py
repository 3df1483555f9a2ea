"""Distributed distillation on 2 gloo processes, launched by torchrun's own machinery (`elastic_launch`, the code
behind `torchrun`), forked so that the workers need not re-import torch. Every launch is bounded in time."""

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from muon_ad.distill.curriculum import CurriculumConfig, PhaseConfig
from muon_ad.distill.data import DistillDataConfig
from muon_ad.distill.objective import DistillLossConfig
from muon_ad.errors import UserError
from muon_ad.models.student import StudentConfig
from muon_ad.models.teacher import build_tiny_teacher, save_teacher
from muon_ad.recipes.distill import DistillConfig, DistillTrainConfig, ValidationConfig, distill
from muon_ad.recipes.distill_t2i import DistillT2IConfig, distill_t2i
from muon_ad.training import distributed
from muon_ad.training.logger import MetricLogger
from tests.test_distill_recipe import rows
from tests.test_t2i import VOCABULARY, tiny_recipe
from tests.tiny import TINY_TEACHER

STUDENT = StudentConfig(base_channels=8, stem_stride=2, heads=2, style_channels=(8, 16), style_dim=16, style_grid=2,
                        style_size=32, norm_groups=4)
TIMEOUT_S = 60  # collectives (and so a launch whose rank died) give up after this long


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_teacher(build_tiny_teacher(TINY_TEACHER, ["a"]), tmp_path_factory.mktemp("teacher") / "teacher"))


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """One AD-target bank shared by every run (made by the first, read by the others)."""
    return tmp_path_factory.mktemp("bank") / "ad-targets.safetensors"


def recipe(teacher, bank, out, steps=6, batch=4, lr=3e-3, **settings) -> DistillConfig:
    cfg = DistillConfig(
        student=STUDENT,
        curriculum=CurriculumConfig(PhaseConfig(steps=steps, batch_size=batch, lr=lr, style_weight=0.0,
                                                content_weight=0.0),
                                    PhaseConfig(steps=0, batch_size=batch, content_weight=None),
                                    PhaseConfig(steps=0, batch_size=batch, content_weight=None), warmup_steps=1),
        data=DistillDataConfig(content_count=12, style_count=12, val_pairs=4),
        distill=DistillLossConfig(target_weight=1.0, target_pairs=8, target_steps=2, target_path=str(bank)),
        validation=ValidationConfig(every=100, batch_size=4, fid_feature_steps=2, fid_feature_widths=(8, 16), grid=2),
        train=DistillTrainConfig(out_dir=str(out), teacher=teacher, checkpoint_every=2),
    )
    cfg.distributed.timeout_s = TIMEOUT_S
    for key, value in settings.items():  # "optimizer.zero1": True, ...
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).clone()


def _worker(cfg: DistillConfig | DistillT2IConfig, record: str | None, kill_at: int | None) -> str:
    """One rank: the recipe through the CLI's error handling. Records its parameters before every step (= after
    the previous one); `kill_at`: rank 1 of the first attempt SIGKILLs itself before that step."""
    torch.set_num_threads(1)
    seen = []

    def hook(plan, student, optimizer):
        if plan.step == kill_at and distributed.rank() == 1 and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
            os.kill(os.getpid(), signal.SIGKILL)
        seen.append(_flat(student))

    try:
        with distributed.errors_from_rank0():
            distill_t2i(cfg) if isinstance(cfg, DistillT2IConfig) else distill(cfg, hooks=[hook])
    except UserError as error:
        Path(cfg.train.out_dir).mkdir(parents=True, exist_ok=True)
        Path(cfg.train.out_dir, "error.txt").write_text(str(error))
        raise
    except SystemExit as exit:
        return f"exit {exit.code}"
    if record:
        torch.save(seen, f"{record}-rank{distributed.rank()}.pt")
    return "done"


def launch(cfg: DistillConfig | DistillT2IConfig, record: str | None = None, kill_at: int | None = None, restarts: int = 0) -> dict:
    """2 ranks through torchrun's launcher (`torchrun --max-restarts RESTARTS` runs this very code)."""
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="test", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=restarts, monitor_interval=0.1,
                          start_method="fork", rdzv_configs={"timeout": TIMEOUT_S})
    return elastic_launch(config, _worker)(cfg, record, kill_at)


def student(out: Path) -> dict:
    return load_file(str(out / "student" / "model.safetensors"))


def assert_close(a: dict, b: dict, atol: float) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def one_process(teacher, bank, tmp_path_factory):
    """The reference: the same recipe and global batch on one process."""
    out = tmp_path_factory.mktemp("single") / "run"
    distill(recipe(teacher, bank, out))
    return student(out)


def test_ranks_stay_identical_and_match_one_process(teacher, bank, one_process, tmp_path):
    out = tmp_path / "run"
    assert launch(recipe(teacher, bank, out, **{"optimizer.zero1": True}), record=str(tmp_path / "params")) == \
        {0: "done", 1: "done"}
    ranks = [torch.load(tmp_path / f"params-rank{r}.pt") for r in range(2)]
    assert len(ranks[0]) == 6
    for step, (a, b) in enumerate(zip(*ranks)):
        assert torch.equal(a, b), f"ranks differ before step {step}"
    assert not torch.equal(ranks[0][0], ranks[0][-1])  # it trained
    # Same global batch, DDP-averaged slices: one process's run within float rounding after 6 steps.
    assert_close(student(out), one_process, atol=1e-5)
    assert len(rows(out / "log.csv")) == 6  # rank 0 alone wrote: one row per step


def test_powersgd_and_int8_zero1_updates_train(teacher, bank, tmp_path):
    out = tmp_path / "run"
    cfg = recipe(teacher, bank, out, steps=16, lr=1e-2, **{"optimizer.zero1": True, "optimizer.zero1_gather": "int8",
                                                  "distributed.grad_compression": "powersgd",
                                                  "distributed.powersgd_start_step": 2})
    cfg.validation.every = 8
    assert launch(cfg, record=str(tmp_path / "params")) == {0: "done", 1: "done"}
    a, b = (torch.load(tmp_path / f"params-rank{r}.pt")[-1] for r in range(2))
    assert torch.equal(a, b)  # compressed gradients and rounded updates, still bit-identical ranks
    val = [float(r["val_loss"]) for r in rows(out / "val.csv")]
    assert val[-1] < 0.95 * val[0], val  # uncompressed on one process: 0.497 -> 0.440


def test_checkpoint_of_two_ranks_resumes_on_one_and_on_two(teacher, bank, one_process, tmp_path):
    first = tmp_path / "first"
    assert launch(recipe(teacher, bank, first, steps=3, **{"optimizer.zero1": True})) == {0: "done", 1: "done"}
    assert (first / "step-0000003").is_dir()
    for name, run in (("on-one", lambda cfg: distill(cfg)), ("on-two", launch)):
        out = tmp_path / name
        shutil.copytree(first, out)
        run(recipe(teacher, bank, out, **{"optimizer.zero1": True}))
        assert [int(r["step"]) for r in rows(out / "log.csv")] == [1, 2, 3, 4, 5, 6]  # resumed at 3, not restarted
        assert_close(student(out), one_process, atol=1e-5)  # = 6 uninterrupted steps on one process


def test_a_killed_rank_restarts_the_group_from_the_last_checkpoint(teacher, bank, one_process, tmp_path, monkeypatch):
    # Closing the logs takes a second (the forked ranks inherit the patch), so the SIGTERM that torchrun sends the
    # survivors within 0.1 s of rank 1's death lands while rank 0 unwinds: what CI once met by chance, made certain.
    close = MetricLogger.close

    def slow_close(self) -> None:
        time.sleep(1.0)
        close(self)

    monkeypatch.setattr(MetricLogger, "close", slow_close)
    out = tmp_path / "run"
    assert launch(recipe(teacher, bank, out), kill_at=5, restarts=1) == {0: "done", 1: "done"}
    # The first attempt's rank 0 said why in one line; the second resumed from step 4 and finished at step 6.
    assert "another process of this run died" in (out / "error.txt").read_text()
    assert [int(r["step"]) for r in rows(out / "log.csv")] == [1, 2, 3, 4, 5, 5, 6]  # step 5 done twice
    assert_close(student(out), one_process, atol=1e-5)  # as if never interrupted


def test_more_processes_than_a_batch_splits_into_is_one_line_from_rank_0(teacher, bank, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Exception):
        launch(recipe(teacher, bank, out, batch=3))
    assert (out / "error.txt").read_text() == (
        "2 processes cannot share curriculum.style_alignment.batch_size=3 equally (each rank takes an equal slice of "
        "every batch): launch a number of processes that divides it, or change it")
    assert not list(out.glob("step-*")) and not (out / "log.csv").exists()


def test_the_teachers_terms_with_projection_on_two_ranks_match_one_process(teacher, bank, tmp_path):
    # The step's timesteps and noise are drawn for the global batch and sliced; DDP stays out of the backward and
    # each objective's gradient is averaged by hand. (Not with a content weight here: L1 between the queries of an
    # image and of its own content has a gradient of signs of rounding noise while the student is still the identity.)
    runs = {}
    for name, run in (("one", distill), ("two", launch)):
        cfg = recipe(teacher, bank, tmp_path / name, steps=3, **{"distill.conflict_projection": True})
        cfg.curriculum.style_alignment.style_weight = 0.5
        run(cfg)
        runs[name] = student(tmp_path / name)
    assert_close(runs["two"], runs["one"], atol=1e-5)


def _projection_worker(batch: torch.Tensor) -> list[torch.Tensor]:
    """This rank's half of the batch through two conflicting objectives, combined with the ranks' mean gradients."""
    from muon_ad.optim import ConflictProjection

    distributed.setup("cpu", TIMEOUT_S)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x = distributed.shard(batch)
    losses = [(model(x) - 1).pow(2).mean(), (model(x) + 1).pow(2).mean()]
    ConflictProjection(threshold=0.0, rate=1.0).backward(losses, list(model.parameters()),
                                                         reduce=distributed.average_gradients)
    return [p.grad for p in model.parameters()]


def test_projection_combines_the_global_batchs_gradients(tmp_path):
    batch = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    batch[4:] *= 3  # the two halves' gradients differ: projecting each rank's own would give another result
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="projection", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1, start_method="fork",
                          rdzv_configs={"timeout": TIMEOUT_S})
    ranks = elastic_launch(config, _projection_worker)(batch)
    expected = _projection_worker(batch)  # one process, the whole batch
    for got in ranks.values():
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def t2i_teacher(tmp_path_factory):
    torch.manual_seed(0)
    return save_teacher(build_tiny_teacher(TINY_TEACHER, VOCABULARY), tmp_path_factory.mktemp("t2i") / "teacher")


def test_the_text_to_image_recipe_on_two_ranks_matches_one_process(t2i_teacher, tmp_path):
    def t2i(out):
        cfg = tiny_recipe(t2i_teacher, out)  # batch 2: one image per rank; both phases, conflict projection on
        cfg.distributed.timeout_s = TIMEOUT_S
        return cfg

    distill_t2i(t2i(tmp_path / "one"))
    assert launch(t2i(tmp_path / "two")) == {0: "done", 1: "done"}
    one, two = (load_file(str(tmp_path / name / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
                for name in ("one", "two"))
    assert_close(two, one, atol=1e-5)
    assert len(rows(tmp_path / "two" / "log.csv")) == 4  # rank 0 alone wrote


def refusal(refused: bool, message: str):
    """A one-line refusal naming `message` is expected, or nothing at all."""
    return pytest.raises(UserError, match=message) if refused else contextlib.nullcontext()


@pytest.mark.parametrize("content_weight, refused", [(None, False), (0.5, True)])
def test_compression_beside_projection_is_refused_only_when_the_teachers_terms_are_on(monkeypatch, content_weight,
                                                                                       refused):
    # The shipped CPU config (phase 1 λ 0, later phases carry it over) with the README's compression command.
    from muon_ad.config import load_config
    from muon_ad.recipes.distill import _check_distributed

    cfg = load_config(DistillConfig, Path(__file__).parents[1] / "configs" / "stylize-cpu.yaml",
                      ["distributed.grad_compression=powersgd", "optimizer.zero1=true"])
    cfg.curriculum.content_refinement.content_weight = content_weight  # None: λ = 0 carried over from phase 1
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with refusal(refused, "grad_compression=powersgd"):
        _check_distributed(cfg)


@pytest.mark.parametrize("projection, refused", [(True, True), (False, False)])
def test_t2i_refuses_compression_beside_projection_through_the_shared_check(monkeypatch, projection, refused):
    from muon_ad.recipes.distill_t2i import _check_distributed

    cfg = DistillT2IConfig()
    cfg.distributed.grad_compression, cfg.distill.conflict_projection = "powersgd", projection
    cfg.schedule.batch_size = 4
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with refusal(refused, "grad_compression=powersgd compresses DDP's all-reduce"):
        _check_distributed(cfg)
