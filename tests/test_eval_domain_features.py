import torch

from muon_ad.data.procedural import ProceduralTextures
from muon_ad.eval.domain_features import DomainFeatures, train_domain_features
from muon_ad.eval.fid import compute_fid


def _train(steps: int) -> tuple[DomainFeatures, ProceduralTextures]:
    data = ProceduralTextures(count=96, size=32, seed=0)  # 12 families, 8 of each
    return train_domain_features(data, steps=steps, batch_size=32, seed=0, widths=(8, 16, 32), size=32), data


def test_trained_features_tell_the_families_apart_and_survive_save_load(tmp_path):
    model, data = _train(steps=80)
    images = torch.stack([data[i]["image"] for i in range(len(data))])
    labels = torch.tensor([data[i]["label"] for i in range(len(data))])
    with torch.no_grad():
        accuracy = (model.logits(images).argmax(1) == labels).float().mean()
    assert accuracy > 0.3  # chance is 1/12; measured 0.51
    assert model.labels == data.class_names and not model.training

    model.save(tmp_path / "features")
    loaded = DomainFeatures.load(tmp_path / "features")
    assert loaded.labels == model.labels and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)

    # FID-domain is small between two draws of one family and large between families.
    stripes = ProceduralTextures(count=24, size=32, seed=1, families=["stripes"])
    more_stripes = ProceduralTextures(count=24, size=32, seed=2, families=["stripes"])
    dots = ProceduralTextures(count=24, size=32, seed=1, families=["dots"])
    a, b, c = ([s[i]["image"] for i in range(len(s))] for s in (stripes, more_stripes, dots))
    assert 3 * compute_fid(a, b, loaded) < compute_fid(a, c, loaded)  # measured: 0.66 vs 7.0


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first, _ = _train(steps=2)
    assert torch.equal(torch.get_rng_state(), state)
    second, _ = _train(steps=2)
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)


def test_features_have_the_declared_size_for_any_input_size():
    model = DomainFeatures(["a", "b", "c"], widths=(8, 16), size=16)
    assert model(torch.rand(2, 3, 40, 24) * 2 - 1).shape == (2, model.num_features) == (2, 16)
