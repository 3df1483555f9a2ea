import re

import pytest
import torch

from muon_ad.eval.report import Claim, ParetoPoint, Report, convergence_figure, pareto_figure, pareto_front
from muon_ad.visual import image_grid


def test_pareto_front_keeps_only_undominated_points():
    points = [ParetoPoint("fast-bad", 1.0, 50.0), ParetoPoint("slow-good", 100.0, 10.0),
              ParetoPoint("dominated", 120.0, 60.0), ParetoPoint("middle", 10.0, 20.0)]
    assert [p.name for p in pareto_front(points)] == ["fast-bad", "middle", "slow-good"]


def test_claims_reject_an_unknown_verdict():
    with pytest.raises(ValueError, match="verdict"):
        Claim("24 FPS", "30 FPS", "muon-ad bench realtime", "probably")


def test_report_writes_html_and_markdown_with_every_block_and_its_files(tmp_path):
    report = Report(tmp_path / "out", "Demo <run>")
    report.heading("Claims")
    report.claims([Claim("24 FPS real-time", "31.2 FPS at 256 px", "muon-ad bench realtime", "met"),
                   Claim("65% less communication", "not measured", "muon-ad bench comm", "not built yet")])
    report.paragraph("Run `muon-ad demo` to reproduce | this.")
    report.table(["model", "FID-domain"], [["muon", 12.3456789], ["adamw", 14.0]])
    report.image(image_grid(torch.zeros(2, 3, 8, 8)), "grid.png", "a grid")
    report.figure(convergence_figure({"adam": ([0, 1, 2], [1.0, 0.5, 0.25]), "muon": ([0, 1, 2], [1.0, 0.3, 0.1])},
                                     "step", "loss", "AD"), "curves.png", "convergence")
    report.figure(pareto_figure([ParetoPoint("student", 5.0, 10.0), ParetoPoint("teacher", 5000.0, 8.0)],
                                "FID-domain", "quality vs latency"), "pareto.png", "pareto")
    index = report.write()

    page = index.read_text()
    assert "<title>Demo &lt;run&gt;</title>" in page  # escaped, not markup
    assert "<td class='verdict-met'>met</td>" in page and "<td class='verdict-not-built-yet'>" in page
    assert "<code>muon-ad demo</code>" in page and "12.35" in page
    for name in re.findall(r"<img src='([^']+)'", page):
        assert (index.parent / name).stat().st_size > 0
    assert len(re.findall(r"<img ", page)) == 3

    markdown = (index.parent / "report.md").read_text()
    assert "| 24 FPS real-time | 31.2 FPS at 256 px | `muon-ad bench realtime` | met |" in markdown
    assert "to reproduce | this" in markdown  # paragraphs are not table cells: no escaping needed
    assert "![pareto](pareto.png)" in markdown
