"""`muon-ad demo --quick` end to end: every stage runs, and the report's claims table has every row filled."""

import json
import re

from muon_ad.eval.report import VERDICTS
from muon_ad.demo import run_demo


def _table_rows(markdown: str, header: str) -> list[list[str]]:
    lines = markdown.split(header, 1)[1].strip().splitlines()[1:]  # skip the |---| line
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def test_quick_demo_fills_every_claim_row(tmp_path):
    index = run_demo(tmp_path / "report", quick=True)
    folder = index.parent

    markdown = (folder / "report.md").read_text()
    claims = _table_rows(markdown, "| paper's claim | measured in this run | how | verdict |")
    assert len(claims) >= 7
    for claim, measured, how, verdict in claims:
        assert claim and measured and how.startswith("`muon-ad ") and verdict in VERDICTS
    names = " ".join(row[0] for row in claims)
    for claim in ("3.2×", "15% lower FID", "4% higher SSIM", "24 FPS", "7 GB", "65% less communication", "10 s/image"):
        assert claim in names
    verdicts = {row[0]: row[3] for row in claims}
    # built but not part of the demo (it needs 2 processes): says so and names the benchmark, never a made-up number
    assert verdicts["65% less communication (distributed training)"] == "not run here"
    assert all(v in ("met", "not met") for k, v in verdicts.items() if "communication" not in k and "pruning" not in k)

    goals = _table_rows(markdown, "| goal | measured in this run | how | verdict |")
    assert any("style strength" in row[0] for row in goals) and all(row[3] in VERDICTS for row in goals)
    header = ("| row | style FID-domain ↓ | palette hit ↑ | family hit ↑ | Gram distance ↓ | style strength ↑ | "
              "SSIM to content | edge score | ms / image |")
    rows = {row[0] for row in _table_rows(markdown, header)}
    assert rows == {"identity", "AD Adam", "AD Muon", "Muon-AD", "AdamW"}  # every reference row, on the same pairs

    page = index.read_text()
    for name in re.findall(r"<img src='([^']+)'", page):
        assert (folder / name).stat().st_size > 0, name
    assert "pareto.png" in page and "distill-convergence.png" in page and "stream-output.gif" in page

    stages = json.loads((folder / "stages.json").read_text())
    for stage in ("teacher", "features", "ad", "distill", "evaluate", "realtime", "memory", "stream"):
        assert stages[stage]["status"] == "done", stage
    assert stages["stream"]["results"]["frames"] == stages["stream"]["results"]["stylised"] + stages["stream"]["results"]["skipped"]
    assert stages["memory"]["results"]["student_peak_mb"] > stages["memory"]["results"]["process_baseline_mb"]
    assert stages["memory"]["results"]["quant_peak_mb"] > stages["memory"]["results"]["process_baseline_mb"]
    assert stages["realtime"]["results"]["student_fps_int8"] > 0  # the int8 ONNX Runtime student, measured
