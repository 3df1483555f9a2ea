import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from muon_ad.optim import Muon, ShardedMuon

MATRICES = [(24, 24), (16, 48), (40, 12), (24, 24), (8, 4, 3, 3)]
VECTORS = [(24,), (7,)]


def _setup(cls=Muon):
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in MATRICES + VECTORS]
    groups = [{"params": params[: len(MATRICES)]}, {"params": params[len(MATRICES) :], "use_muon": False, "lr": 1e-2}]
    return params, cls(groups, weight_decay=0.01, ns_dtype="float32")


def _run(params, opt, steps):
    for step in steps:
        g = torch.Generator().manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)  # identical on every rank, as after an all-reduce
        opt.step()


def _worker(rank, world, init_file, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    # 2 ranks from scratch for 3 steps, then the gathered (full) state.
    params, opt = _setup(ShardedMuon)
    _run(params, opt, range(3))
    owned = {p for p, r in opt.owners().items() if r == rank}
    assert 0 < len(owned) < len(params) and set(opt.state) == owned  # each rank holds only its share
    state = opt.state_dict()
    if rank == 0:
        torch.save({"params": [p.detach() for p in params], "state": state}, f"{tmp}/sharded.pt")
    # 1 → 2 ranks: resume a single-process checkpoint and continue.
    single = torch.load(f"{tmp}/single.pt")
    params, opt = _setup(ShardedMuon)
    with torch.no_grad():
        for p, saved in zip(params, single["params"]):
            p.copy_(saved)
    opt.load_state_dict(single["state"])
    _run(params, opt, range(3, 5))
    if rank == 0:
        torch.save([p.detach() for p in params], f"{tmp}/resumed_on_2.pt")
    dist.destroy_process_group()


def test_sharded_step_equals_single_process_and_checkpoints_move_between_world_sizes(tmp_path):
    params, opt = _setup()
    _run(params, opt, range(3))
    torch.save({"params": [p.detach().clone() for p in params], "state": opt.state_dict()}, tmp_path / "single.pt")
    # fork, not spawn: a spawned child spends seconds re-importing torch.
    mp.start_processes(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="fork")

    sharded = torch.load(tmp_path / "sharded.pt")
    for p, q in zip(params, sharded["params"]):
        torch.testing.assert_close(q, p.detach(), atol=1e-6, rtol=0)
    # Every parameter's state came back from its owner: a 2-rank checkpoint resumes on 1 process.
    resumed_params, resumed = _setup()
    with torch.no_grad():
        for p, saved in zip(resumed_params, sharded["params"]):
            p.copy_(saved)
    resumed.load_state_dict(sharded["state"])
    _run(resumed_params, resumed, range(3, 5))
    _run(params, opt, range(3, 5))
    resumed_on_2 = torch.load(tmp_path / "resumed_on_2.pt")
    for p, q, r in zip(params, resumed_params, resumed_on_2):
        torch.testing.assert_close(q, p.detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(r, p.detach(), atol=1e-6, rtol=0)
