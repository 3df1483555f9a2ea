import random

import numpy as np
import torch

from muon_ad.training.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state


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
