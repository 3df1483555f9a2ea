"""Where an exported student's time goes: latency of export folders side by side, and ONNX Runtime's own
per-kernel profile of their per-frame graph (`muon-ad profile EXPORT [EXPORT ...]`).

Latency is the runtime's one path (`run_student`: pad, run, crop), timed in blocks of consecutive frames taking
turns (`eval.profile.interleaved_ms`), so two exports measured together see the same machine. The kernel profile
is ORT's profiler (`SessionOptions.enable_profiling`): the time of each node's kernel, summed by op type and by
node, per run, the first (cold) run left out. Kernel times do not add up to the latency: ORT's own dispatch and
the profiler's overhead come on top.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from muon_ad.eval.profile import interleaved_ms, median
from muon_ad.export.onnx import MODEL, session
from muon_ad.models.student import pad_to_multiple
from muon_ad.runtime.backends import OnnxStudent, encode_style, run_student


def kernel_ms(path: str | Path, feeds: dict[str, np.ndarray], runs: int = 10,
              threads: int | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """({op type: ms}, {node name: ms}) per run of the graph at `path` on `feeds`, from ORT's profiler over
    `runs` runs after one warm-up run, largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        graph = session(path, threads, profile_prefix=str(Path(tmp) / "profile"))
        for _ in range(runs + 1):
            graph.run(None, feeds)
        events = json.loads(Path(graph.end_profiling()).read_text())
    warm = min(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")  # end of the first run
    by_op, by_node = Counter(), Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warm:
            op, ms = event["args"]["op_name"], event["dur"] / 1000 / runs
            by_op[op] += ms
            by_node[f"{event['name'].removesuffix('_kernel_time')} ({op})"] += ms
    return dict(by_op.most_common()), dict(by_node.most_common())


def profile_exports(folders: Sequence[Path], sizes: Sequence[int], threads: int | None = None,
                    repeats: int = 40, seed: int = 0) -> dict:
    """{size: {folder: {"ms": median latency, "ops": {...}, "nodes": {...}}}} of each export folder at size×size,
    on one seeded (content, style) pair."""
    backends = {str(folder): OnnxStudent(folder, threads) for folder in folders}
    generator = torch.Generator().manual_seed(seed)
    report = {}
    for size in sizes:
        content = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
        style = torch.rand(3, size, size, generator=generator) * 2 - 1
        codes = {name: encode_style(backend, style) for name, backend in backends.items()}
        calls = {name: (lambda b=backend, c=codes[name]: run_student(b, content, c)) for name, backend in backends.items()}
        times = interleaved_ms(calls, repeats)
        report[size] = {}
        for name, backend in backends.items():
            feeds = {"content": pad_to_multiple(content, backend.multiple).numpy(), "tokens": codes[name].numpy()}
            ops, nodes = kernel_ms(Path(name) / MODEL, feeds, threads=threads)
            report[size][name] = {"ms": median(times[name]), "ops": ops, "nodes": nodes}
    return report
