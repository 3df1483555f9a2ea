"""The loss curve of a synthesis run, next to its image: out.png -> out.loss.csv and out.loss.png.

Both are written atomically (temporary name, then rename), like the image, so an interrupted run never
leaves a half-written file behind. The plot uses a bare matplotlib `Figure` (Agg canvas), so no GUI
backend is ever touched.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from muon_ad.io import write_text_atomic
from muon_ad.data.images import save_image_atomic
from muon_ad.synthesis.ad_loop import History


def loss_curve_paths(out: str | Path) -> tuple[Path, Path]:
    """(CSV, PNG) paths that belong to the output image `out`."""
    out = Path(out)
    return out.with_suffix(".loss.csv"), out.with_suffix(".loss.png")


def save_loss_curve(history: History, out: str | Path, title: str = "") -> tuple[Path, Path]:
    """Write the per-step losses of `history` as CSV and as a plot next to `out`; return both paths."""
    from matplotlib.figure import Figure

    csv_path, png_path = loss_curve_paths(out)
    columns = list(history[0]) if history else ["step", "loss"]
    rows = [",".join(columns)] + [",".join(f"{row[c]:.6g}" for c in columns) for row in history]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(csv_path, "\n".join(rows) + "\n")

    fig = Figure(figsize=(5, 3.2), dpi=100, layout="tight")
    ax = fig.add_subplot()
    steps = [row["step"] for row in history]
    for key in ("loss", "ad", "content"):
        if history and key in history[0] and any(row[key] for row in history):
            ax.plot(steps, [row[key] for row in history], label=key)
    ax.set(xlabel="optimiser step", ylabel="L1 loss", title=title or Path(out).name)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    save_image_atomic(Image.open(buffer), png_path)
    return csv_path, png_path
