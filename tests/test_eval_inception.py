import pytest
import torch

from muon_ad.errors import UserError
from muon_ad.eval.inception import WEIGHTS_NAME, FIDInceptionV3, load_fid_inception


def test_state_dict_round_trip_through_the_hub_cache_and_2048_features(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = FIDInceptionV3()
    # torchvision's Inception3 has 27,161,264 parameters; without the aux head (3,326,696) and with
    # 1008 instead of 1000 classes (+16,392) that is the layout of pt_inception-2015-12-05.
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    keys = model.state_dict().keys()
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch5x5_2.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7a.branch7x7x3_4.conv.weight",
                "Mixed_7c.branch3x3dbl_3b.bn.running_mean", "fc.weight", "fc.bias"):
        assert key in keys

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(model.state_dict(), hub / "checkpoints" / WEIGHTS_NAME)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    loaded = load_fid_inception(tmp_path / "elsewhere.pth")  # not there: falls back to the hub cache
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name

    features = loaded(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_missing_weights_name_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as error:
        load_fid_inception(tmp_path / "mine.pth")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "mine.pth") in message
    assert str(tmp_path / "hub" / "checkpoints" / WEIGHTS_NAME) in message


def test_a_wrong_state_dict_is_a_user_error(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="is not the"):
        load_fid_inception(tmp_path / "other.pth")
