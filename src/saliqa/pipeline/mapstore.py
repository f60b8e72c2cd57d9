"""A chunked store of per-image patch maps, keyed by ``image_id``.

Maps differ in shape from image to image, so they do not fit one array or a parquet cell. Each shard is one
``.npz`` file (no pickles) holding the ids, each map's shape, the maps' values concatenated, and each map's
grid edges; a shard is written atomically and is the unit a killed run resumes from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from saliqa.io.atomic import atomic_path
from saliqa.iqa.base import PatchGrid


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)


def write_map_shard(
    path: str | Path, image_ids: Sequence[str], maps: Sequence[np.ndarray], grids: Sequence[PatchGrid]
) -> None:
    """Write one shard of ``len(image_ids)`` maps (2-D float32) with their grids, atomically."""
    if not (len(image_ids) == len(maps) == len(grids)):
        raise ValueError("image_ids, maps and grids must have the same length")
    for image_id, m, g in zip(image_ids, maps, grids, strict=True):
        if m.ndim != 2 or m.shape != g.shape:
            raise ValueError(f"{image_id}: map shape {m.shape} does not match its grid {g.shape}")
    arrays = {
        "image_id": np.asarray(list(image_ids), dtype=np.str_),
        "shape": np.asarray([m.shape for m in maps], dtype=np.int64).reshape(-1, 2),
        "values": np.concatenate(
            [np.asarray(m, np.float32).ravel() for m in maps] or [np.zeros(0, np.float32)]
        ),
        "value_offset": _offsets([m.size for m in maps]),
        "row_edges": np.concatenate([np.asarray(g.row_edges) for g in grids] or [np.zeros(0)]),
        "row_offset": _offsets([len(g.row_edges) for g in grids]),
        "col_edges": np.concatenate([np.asarray(g.col_edges) for g in grids] or [np.zeros(0)]),
        "col_offset": _offsets([len(g.col_edges) for g in grids]),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def read_map_shard(path: str | Path) -> Iterator[tuple[str, np.ndarray, PatchGrid]]:
    """Every (image_id, map, grid) of one shard, in stored order."""
    with np.load(path, allow_pickle=False) as z:
        ids, shapes, values = z["image_id"], z["shape"], z["values"]
        vo, rows, ro, cols, co = (
            z["value_offset"],
            z["row_edges"],
            z["row_offset"],
            z["col_edges"],
            z["col_offset"],
        )
    for i, image_id in enumerate(ids):
        grid = PatchGrid(tuple(rows[ro[i] : ro[i + 1]].tolist()), tuple(cols[co[i] : co[i + 1]].tolist()))
        yield str(image_id), values[vo[i] : vo[i + 1]].reshape(shapes[i]), grid


class MapStore:
    """Read access to a folder of map shards (``*.npz``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._index: dict[str, Path] | None = None

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("*.npz"))

    def _lookup(self) -> dict[str, Path]:
        if self._index is None:
            index: dict[str, Path] = {}
            for shard in self.shards():
                with np.load(shard, allow_pickle=False) as z:
                    index.update(dict.fromkeys(z["image_id"].tolist(), shard))
            self._index = index
        return self._index

    def ids(self) -> list[str]:
        return sorted(self._lookup())

    def __len__(self) -> int:
        return len(self._lookup())

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._lookup()

    def get(self, image_id: str) -> tuple[np.ndarray, PatchGrid]:
        """The map and grid of one image (KeyError if it has none, e.g. a rejected image)."""
        shard = self._lookup()[image_id]
        for found, values, grid in read_map_shard(shard):
            if found == image_id:
                return values, grid
        raise KeyError(image_id)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, PatchGrid]]:
        for shard in self.shards():
            yield from read_map_shard(shard)
