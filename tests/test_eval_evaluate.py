import pytest
import torch

from muon_ad.data.images import save_image_atomic
from muon_ad.errors import UserError
from muon_ad.eval.domain_features import DomainFeatures
from muon_ad.eval.evaluate import evaluate_images, to_markdown


def _sets() -> tuple[torch.Tensor, torch.Tensor, DomainFeatures]:
    torch.manual_seed(0)
    real = torch.rand(6, 3, 16, 16) * 2 - 1
    fake = (real + 0.1 * torch.randn(real.shape)).clamp(-1, 1)
    return real, fake, DomainFeatures(["a", "b"], widths=(8, 16), size=16)


def test_domain_metrics_are_labelled_and_ssim_needs_pairs():
    real, fake, feature = _sets()
    metrics = evaluate_images(fake, real, feature=feature, kid_subsets=5)
    assert metrics["feature"] == "domain" and metrics["num_fake"] == metrics["num_real"] == 6
    assert metrics["fid_domain"] > 0 and metrics["kid_domain_std"] >= 0
    assert "fid" not in metrics and "ssim" not in metrics

    paired = evaluate_images(fake, real, feature=feature, pairs_with=real, kid_subsets=5)
    assert paired["fid_domain"] == metrics["fid_domain"]
    assert 0 < paired["ssim"] < 1 and paired["psnr"] > 20
    with pytest.raises(UserError, match="aligned pairs"):
        evaluate_images(fake, real, feature=feature, pairs_with=real[:5])

    table = to_markdown(paired)
    assert "| FID-domain |" in table and "| SSIM |" in table and "| FID |" not in table


def test_folders_give_the_same_metrics_as_tensors(tmp_path):
    real, fake, feature = _sets()
    for i, image in enumerate(real):
        save_image_atomic(image, tmp_path / "real" / f"{i:02d}.png")
    from_folder = evaluate_images(fake, tmp_path / "real", feature=feature, pairs_with=tmp_path / "real", kid_subsets=5)
    quantised = (((real + 1) * 127.5).round() / 127.5 - 1).clamp(-1, 1)  # what an 8-bit PNG keeps
    from_tensor = evaluate_images(fake, quantised, feature=feature, pairs_with=quantised, kid_subsets=5)
    for key in ("fid_domain", "kid_domain_mean", "ssim", "psnr"):
        assert from_folder[key] == pytest.approx(from_tensor[key], rel=1e-5, abs=1e-9), key


def test_inception_without_weights_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    real, fake, _ = _sets()
    with pytest.raises(UserError, match="not found"):
        evaluate_images(fake, real, feature="inception")


def test_small_sets_are_flagged_and_references_of_another_size_are_resized(caplog):
    real, fake, feature = _sets()
    metrics = evaluate_images(fake, real, feature=feature, kid_subsets=5)
    assert "6 images" in metrics["warning"] and "6 images" in caplog.text  # 6 < MIN_RELIABLE_SAMPLES
    smooth = torch.nn.functional.interpolate(real[:, :, :4, :4], size=16, mode="bilinear")  # photo-like: no pixel noise
    big = torch.nn.functional.interpolate(smooth, size=64, mode="bilinear")  # e.g. 512 px contents of 48 px outputs
    paired = evaluate_images(smooth, real, feature=feature, pairs_with=big, kid_subsets=5)
    assert paired["ssim"] > 0.95 and paired["psnr"] > 30
