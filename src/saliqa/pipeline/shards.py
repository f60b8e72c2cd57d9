"""Resumable work cut into shards: each finished shard is one parquet part, written last as its commit mark.

A folder of parts belongs to one piece of work, named by a stamp (fingerprint, shard size, device). Parts left
by other work are thrown away, so a resumed run only ever reuses rows computed exactly as it would compute
them, and ends with the same table as an uninterrupted run.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from saliqa.io.atomic import write_text
from saliqa.io.tables import write_table


class Shards:
    """The parts folder of one piece of work."""

    def __init__(self, folder: Path, identity: str, clear_with: Sequence[Path] = ()) -> None:
        """Open ``folder`` for the work ``identity``; if it holds other work, empty it and ``clear_with``."""
        self.folder = folder
        stamp = folder / "WORK"
        if not stamp.exists() or stamp.read_text().strip() != identity:
            for path in (folder, *clear_with):
                shutil.rmtree(path, ignore_errors=True)
            folder.mkdir(parents=True)
            write_text(stamp, identity)

    def part(self, index: int) -> Path:
        return self.folder / f"part-{index:05d}.parquet"

    def done(
        self, index: int, keys: list[list[object]], columns: list[str], step: int = 1
    ) -> pd.DataFrame | None:
        """The finished part ``index`` if its rows are for ``keys`` (one key per ``step`` rows), else None."""
        path = self.part(index)
        if not path.exists():
            return None
        frame = pd.read_parquet(path)
        return frame if frame[columns].iloc[::step].values.tolist() == keys else None

    def commit(self, index: int, frame: pd.DataFrame, schema: pa.Schema | None = None) -> None:
        """Write part ``index``: the shard's commit mark, so it is written after everything else it made."""
        write_table(self.part(index), frame, schema=schema)

    def paths(self, count: int) -> list[Path]:
        return [self.part(i) for i in range(count)]


def discard_parts(folder: Path) -> None:
    """Remove a parts folder once the merged artifact is recorded as done."""
    shutil.rmtree(folder, ignore_errors=True)
