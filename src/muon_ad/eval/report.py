"""A run's report as one static HTML page (`index.html`) plus the same content in Markdown (`report.md`).

Images and plots are written as PNG files next to the page and referenced by relative path, so the
folder can be zipped, served or opened from disk as it is, and the Markdown renders on a code host too.
The report is a list of blocks (headings, paragraphs, tables, images) rendered twice, once per format,
so the two can never disagree. Plots are drawn with matplotlib's Agg backend: no display is needed.

The claims table is the report's centre: each of the paper's claims beside what this run measured,
how it was measured (the command) and a verdict, where "not built yet" marks a capability the project
does not have yet and "not run here" one this run did not measure, never a guessed number.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from muon_ad.io import write_text_atomic
from muon_ad.data.images import save_image_atomic

VERDICTS = ("met", "not met", "not built yet", "not run here")  # the last: built, but this run did not measure it


@dataclass
class Claim:
    """One row of the claims table: the paper's claim beside this run's measurement."""

    claim: str
    measured: str
    how: str
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class ParetoPoint:
    """A model in the quality-vs-latency plot: lower latency and lower `quality` (e.g. FID) are better."""

    name: str
    latency_ms: float
    quality: float


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point beats on both axes (ties kept), sorted by latency."""
    return sorted(
        (p for p in points if not any(_dominates(q, p) for q in points)), key=lambda p: (p.latency_ms, p.quality)
    )


def _dominates(a: ParetoPoint, b: ParetoPoint) -> bool:
    return a.latency_ms <= b.latency_ms and a.quality <= b.quality and (a.latency_ms, a.quality) != (b.latency_ms, b.quality)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display, in tests and on servers
    import matplotlib.pyplot as plt

    return plt


def convergence_figure(curves: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str):
    """Loss curves, one line per run; the y axis is logarithmic when the values span more than a decade."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, (x, y) in curves.items():
        ax.plot(list(x), list(y), label=name, linewidth=1.5)
    values = [v for _, y in curves.values() for v in y]
    if values and min(values) > 0 and max(values) / min(values) > 10:  # log only when it spans decades
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def pareto_figure(points: Sequence[ParetoPoint], quality_label: str, title: str):
    """Quality vs latency (log x), each point labelled, with the Pareto front drawn as a step line."""
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    markers = "osD^v<>p*h"
    for i, p in enumerate(points):  # named in the legend: labels next to points collide when models tie
        ax.scatter(p.latency_ms, p.quality, s=50, marker=markers[i % len(markers)], zorder=3, label=p.name)
    front = pareto_front(points)
    ax.step([p.latency_ms for p in front], [p.quality for p in front], where="post", color="gray", linestyle="--",
            label="Pareto front", zorder=2)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels pile up over short ranges
    ax.set(xlabel="latency per image (ms, log scale)", ylabel=f"{quality_label} (lower is better)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def style_content_figure(rows: dict[str, dict[str, float]], style_key: str, content_keys: Sequence[str],
                         labels: dict[str, str], title: str):
    """Style distance (y, lower is better, e.g. style FID; the axis is inverted so that up is more style) against
    each measure of content kept (x, higher is better; one panel each). Every row is a marked point named in
    the legend; each panel's Pareto front (toward the upper right) is drawn as a step line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(content_keys), figsize=(5.2 * len(content_keys), 3.8), dpi=100, squeeze=False)
    markers = "osD^v<>p*h"
    for ax, key in zip(axes[0], content_keys):
        for i, (name, row) in enumerate(rows.items()):
            ax.scatter(row[key], row[style_key], s=60, marker=markers[i % len(markers)], zorder=3, label=name)
        # pareto_front minimises both axes; with x negated it keeps the points no other beats on both.
        front = pareto_front([ParetoPoint(name, -row[key], row[style_key]) for name, row in rows.items()])
        ax.step([-p.latency_ms for p in front], [p.quality for p in front], where="pre", color="gray",
                linestyle="--", label="Pareto front", zorder=2)
        ax.invert_yaxis()
        ax.set(xlabel=f"{labels[key]} (content kept, higher is better)",
               ylabel=f"{labels[style_key]} (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG and close it (open figures are never freed otherwise)."""
    fig.savefig(path)
    _pyplot().close(fig)
    return Path(path)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 0.2em; font-size: 0.9em; }
figure { display: inline-block; vertical-align: top; margin: 0.5em 1.5em 0.5em 0; }  /* side by side when they fit */
figcaption { color: #555; font-size: 0.9em; max-width: 600px; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.verdict-met { background: #d9f2d9; } .verdict-not-met { background: #f8d7d7; }
.verdict-not-built-yet, .verdict-not-run-here { background: #eee; color: #666; }
"""


class Report:
    """Collect blocks, then `write()` index.html and report.md (and their images) into `folder`."""

    def __init__(self, folder: str | Path, title: str) -> None:
        self.folder, self.title = Path(folder), title
        self.folder.mkdir(parents=True, exist_ok=True)
        self.blocks: list[tuple[str, object]] = []

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        """Plain text; `backticks` become code in both formats."""
        self.blocks.append(("paragraph", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.blocks.append(("table", ([str(h) for h in header], [[_cell(v) for v in row] for row in rows])))

    def claims(self, claims: Sequence[Claim], first_column: str = "paper's claim") -> None:
        """The claims table: claim | measured here | how | verdict, the verdict cell coloured."""
        self.blocks.append(("claims", (first_column, list(claims))))

    def image(self, image: str | Path | Image.Image, name: str, caption: str) -> None:
        """An image file (copied) or PIL image (saved) as `name` (a .png file name) next to the page."""
        target = self.folder / name
        if isinstance(image, Image.Image):
            save_image_atomic(image, target)
        elif Path(image).resolve() != target.resolve():
            shutil.copyfile(image, target)
        with Image.open(target) as img:
            width = img.width
        # Small pictures (32-64 px models) are shown enlarged, pixelated, so they can be seen at all.
        self.blocks.append(("image", (name, caption, width * max(1, min(4, 320 // width)))))

    def figure(self, fig, name: str, caption: str) -> None:
        """A matplotlib figure, saved as `name` (a .png file name) and closed."""
        save_figure(fig, self.folder / name)
        self.blocks.append(("image", (name, caption, None)))

    def write(self) -> Path:
        """Write index.html and report.md; returns the path of index.html."""
        write_text_atomic(self.folder / "report.md", self.markdown())
        write_text_atomic(self.folder / "index.html", self.html())
        return self.folder / "index.html"

    def markdown(self) -> str:
        parts = [f"# {self.title}\n"]
        for kind, payload in self.blocks:
            if kind == "heading":
                parts.append(f"## {payload}\n")
            elif kind == "paragraph":
                parts.append(f"{payload}\n")
            elif kind == "table":
                parts.append(_md_table(*payload))
            elif kind == "claims":
                first, rows = payload
                parts.append(_md_table([first, "measured in this run", "how", "verdict"],
                                       [[c.claim, c.measured, f"`{c.how}`", c.verdict] for c in rows]))
            elif kind == "image":
                name, caption, _ = payload
                parts.append(f"![{caption}]({name})\n\n*{caption}*\n")
        return "\n".join(parts)

    def html(self) -> str:
        parts = [f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                 f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(self.title)}</h1>"]
        for kind, payload in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{_inline(payload)}</h2>")
            elif kind == "paragraph":
                parts.append(f"<p>{_inline(payload)}</p>")
            elif kind == "table":
                header, rows = payload
                parts.append(_html_table(header, [[_inline(v) for v in row] for row in rows]))
            elif kind == "claims":
                first, claims = payload
                rows = [[_inline(c.claim), _inline(c.measured), f"<code>{html.escape(c.how)}</code>",
                         (c.verdict, html.escape(c.verdict))] for c in claims]
                parts.append(_html_table([first, "measured in this run", "how", "verdict"], rows))
            elif kind == "image":
                name, caption, width = payload
                size = f" width='{width}'" if width else ""
                parts.append(f"<figure><img src='{html.escape(name)}'{size} alt='{html.escape(caption)}'>"
                             f"<figcaption>{_inline(caption)}</figcaption></figure>")
        parts.append("</body></html>\n")
        return "\n".join(parts)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _inline(text: str) -> str:
    """Escape for HTML, then turn `code` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows]) + "\n"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str | tuple[str, str]]]) -> str:
    """Cells are HTML; a (verdict, html) pair becomes a cell classed by its verdict, for colour."""

    def cell(value: str | tuple[str, str]) -> str:
        if isinstance(value, tuple):
            return f"<td class='verdict-{value[0].replace(' ', '-')}'>{value[1]}</td>"
        return f"<td>{value}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
