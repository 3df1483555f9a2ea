import logging

import pytest
import torch
from torch import nn

from muon_ad.config import load_config
from muon_ad.errors import UserError
from muon_ad.optim import Muon, OptimizerConfig, build_optimizer, split_parameters


class TinyUNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(4, 8, 3, padding=1)
        self.class_embedding = nn.Embedding(5, 8)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.proj = nn.Linear(8, 8)
        self.frozen = nn.Linear(8, 8).requires_grad_(False)
        self.conv_out = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x, label):
        h = self.block(self.conv_in(x)) + self.class_embedding(label)[:, :, None, None]
        h = self.proj(self.norm(h).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv_out(h)


def _names(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_split_sends_hidden_matrices_to_muon_and_the_rest_to_adamw():
    model = TinyUNetLike()
    muon, adamw = split_parameters(model)
    assert _names(model, muon) == {"block.weight", "proj.weight"}
    assert _names(model, adamw) == {
        "conv_in.weight", "conv_in.bias", "class_embedding.weight", "block.bias", "norm.weight", "norm.bias",
        "proj.bias", "conv_out.weight", "conv_out.bias",
    }
    muon, adamw = split_parameters(model, adamw_names="proj, nothing")
    assert _names(model, muon) == {"block.weight"}


def test_build_optimizer_groups_and_logs_the_split(caplog):
    cfg = OptimizerConfig(lr=0.03, weight_decay=0.05, adamw_lr=2e-3, adamw_weight_decay=0.2)
    with caplog.at_level(logging.INFO, logger="muon_ad.optim"):
        opt = build_optimizer(TinyUNetLike(), cfg)
    assert isinstance(opt, Muon)
    muon_group, adamw_group = opt.param_groups
    assert (muon_group["use_muon"], muon_group["lr"], muon_group["weight_decay"]) == (True, 0.03, 0.05)
    assert (adamw_group["use_muon"], adamw_group["lr"], adamw_group["weight_decay"]) == (False, 2e-3, 0.2)
    assert f"Muon: 2 tensors, {8 * 8 * 9 + 8 * 8} parameters" in caplog.text
    assert "AdamW: 9 tensors" in caplog.text


def test_adamw_mode_is_torch_adamw_everywhere():
    torch.manual_seed(0)
    model = TinyUNetLike()
    twin = TinyUNetLike()
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, OptimizerConfig(name="adamw", adamw_lr=1e-2))
    ref = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    x, label = torch.randn(2, 4, 6, 6), torch.tensor([1, 3])
    for m, o in ((model, opt), (twin, ref)):
        for _ in range(2):
            o.zero_grad()
            m(x, label).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_config_loads_from_yaml_and_rejects_bad_values(tmp_path):
    path = tmp_path / "optim.yaml"
    path.write_text("adjust_lr: match_rms_adamw\nlr: 1e-3\nns_coefficients: [3.4445, -4.775, 2.0315]\n"
                    "adamw_betas: [0.9, 0.95]\nns_dtype: float32\n")
    cfg = load_config(OptimizerConfig, path)
    assert cfg.adjust_lr == "match_rms_adamw" and cfg.adamw_betas == (0.9, 0.95) and cfg.lr == 1e-3
    build_optimizer(TinyUNetLike(), cfg).step()  # accepted by the optimizer as well
    for bad in ("adjust_lr: rms\n", "ns_dtype: fp8\n", "name: sgd\n", "ns_coefficients: [1.0, 2.0]\n"):
        path.write_text(bad)
        with pytest.raises(UserError, match="optimizer"):
            load_config(OptimizerConfig, path)
