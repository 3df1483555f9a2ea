"""One logger for every recipe: CSV files (appended across resumes, flushed each row) and TensorBoard.

A run has named streams, each a CSV file with fixed columns: e.g. `log.csv` (one row per step) and
`val.csv` (one per validation). Numbers of chosen columns also go to TensorBoard as `<stream>/<column>`.
Only the main process of a distributed run writes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from muon_ad.training.distributed import is_main_process


class MetricLogger:
    def __init__(self, out: str | Path, streams: dict[str, list[str]], fresh: bool, tensorboard: bool = True):
        """`streams`: CSV file name → its columns. `fresh`: start new files (a run from step 0) instead of appending."""
        self.active = is_main_process()
        self.files, self.writers = {}, {}
        self.board = None
        if not self.active:
            return
        out = Path(out)
        for name, columns in streams.items():
            self.files[name] = (out / name).open("w" if fresh else "a", newline="")
            self.writers[name] = csv.DictWriter(self.files[name], columns)
            if fresh:
                self.writers[name].writeheader()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy import: only runs that log pay for it

            self.board = SummaryWriter(str(out / "tensorboard"))

    def log(self, stream: str, row: dict, step: int, scalars: Iterable[str] = (), tag: str | None = None) -> None:
        """Append `row` to `stream`; the `scalars` columns also go to TensorBoard at `step`, as `tag/column`
        (default tag: the stream's file stem)."""
        if not self.active:
            return
        self.writers[stream].writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
        self.files[stream].flush()  # so `tail -f log.csv` follows the run
        if self.board is not None:
            tag = tag or stream.rsplit(".", 1)[0]
            for key in scalars:
                self.board.add_scalar(f"{tag}/{key}", row[key], step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.board is not None:
            self.board.add_text(tag, text, step)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if self.board is not None:
            self.board.close()
