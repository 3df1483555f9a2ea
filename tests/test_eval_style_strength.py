import math

import pytest
import torch

from muon_ad.bench import stylization as bench
from muon_ad.bench.common import BenchUnavailable
from muon_ad.eval.imitations import colour_transfer
from muon_ad.eval.recognition import train_judges
from muon_ad.eval.report import style_content_figure
from muon_ad.eval.style_strength import (
    edge_score,
    gram_distance,
    palette_family_hits,
    passes_style_bar,
    score_stylization,
    style_strength_ratio,
)
from muon_ad.eval.stylization import builtin_labelled_pairs, builtin_pairs

SIZE, PAIRS = 32, 24


@pytest.fixture(scope="module")
def judges():
    # Small and quick: the palette judge is nearly perfect on real textures even so; the family judge is a
    # DomainFeatures trained on the families, i.e. a FID-domain network, and serves as one below.
    return train_judges(192, SIZE, 50)


@pytest.fixture(scope="module")
def pairs():
    return builtin_labelled_pairs(PAIRS, SIZE)


def test_labelled_pairs_are_the_builtin_pairs_with_their_styles_labels(pairs):
    contents, styles, labels = pairs
    old_contents, old_styles = builtin_pairs(PAIRS, SIZE)
    assert torch.equal(contents, old_contents) and torch.equal(styles, old_styles)
    assert len(labels["family"]) == len(labels["palette"]) == PAIRS
    assert all(" and " in p for p in labels["palette"])  # palette words, as the judges name them


def test_the_identity_map_fails_the_style_bar(pairs, judges):
    contents, styles, labels = pairs
    net = judges["family"]
    identity = score_stylization(contents, contents, styles, labels, net, judges, kid_subsets=10)
    moved = score_stylization(colour_transfer(contents, styles), contents, styles, labels, net, judges, kid_subsets=10)
    ideal = score_stylization(styles, contents, styles, labels, net, judges, kid_subsets=10)  # the style itself
    ratio = style_strength_ratio(identity["style_fid"], ideal["style_fid"], identity["style_fid"])
    assert ratio == 0.0 and not passes_style_bar(ratio)
    # ... and not only by construction: on every style measure it is worse than images that take on the style.
    for better in (moved, ideal):
        assert identity["style_fid"] > better["style_fid"]
        assert identity["palette_hit"] < better["palette_hit"]
        assert identity["gram_distance"] > better["gram_distance"]
    assert ideal["gram_distance"] == pytest.approx(0.0, abs=1e-6)
    assert identity["ssim"] == pytest.approx(1.0, abs=1e-3) and identity["edge_score"] == pytest.approx(1.0, abs=1e-5)


def test_a_style_moved_output_scores_between_identity_and_the_style(pairs, judges):
    contents, styles, labels = pairs
    net = judges["family"]
    fids = {name: score_stylization(images, contents, styles, labels, net, judges, kid_subsets=10)["style_fid"]
            for name, images in [("identity", contents), ("style", styles),
                                 ("moved", colour_transfer(contents, styles))]}
    ratio = style_strength_ratio(fids["identity"], fids["style"], fids["moved"])
    assert 0.0 < ratio < 1.0
    assert passes_style_bar(style_strength_ratio(fids["identity"], fids["style"], fids["style"]))
    assert math.isnan(style_strength_ratio(1.0, 1.0, 0.5))  # AD did not move: no scale


def test_palette_hits_are_per_pair_against_each_outputs_own_style(pairs, judges):
    _, styles, labels = pairs
    shuffled = {key: values[1:] + values[:1] for key, values in labels.items()}  # every pair given another's labels
    assert palette_family_hits(styles, labels, judges)["palette"] > palette_family_hits(styles, shuffled, judges)["palette"]


def test_edge_score_keeps_structure_and_ignores_colour(pairs):
    contents, styles, _ = pairs
    recoloured = ((contents[:, [2, 0, 1]] + 1) / 2) ** 2 * 1.6 - 0.8  # channels swapped, a curve, gain and offset
    noise = torch.rand(contents.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert edge_score(recoloured, contents) > 0.9
    assert edge_score(styles, contents) < 0.3
    assert edge_score(noise, contents) < 0.1
    assert edge_score(colour_transfer(contents, styles), contents) > 0.9  # a colour move alone keeps the content


def test_gram_distance_is_zero_only_for_the_styles_own_statistics(pairs, judges):
    contents, styles, _ = pairs
    net = judges["family"]
    assert gram_distance(styles, styles, net) == pytest.approx(0.0, abs=1e-6)
    assert gram_distance(styles.flip(-1), styles, net) < gram_distance(contents, styles, net)  # layout-free


def test_pareto_plot_marks_every_row(tmp_path):
    rows = {bench.ROWS[row]: {"ssim": 1 - 0.1 * i, "edge_score": 1 - 0.05 * i, "style_fid": 50.0 - 10 * i}
            for i, row in enumerate(bench.ROWS)}
    figure = style_content_figure(rows, "style_fid", ["ssim", "edge_score"], bench.LABELS, "test")
    for ax in figure.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [*rows, "Pareto front"]
        assert len(ax.collections) == len(rows)  # one marked point per row
        assert len(ax.lines[0].get_xdata()) == len(rows)  # each trades content for style: all on the front
    bench.save_figure(figure, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").stat().st_size > 0


def test_without_a_teacher_the_bench_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchUnavailable, match="train-teacher"):
        bench.run(quick=True, device="cpu")
