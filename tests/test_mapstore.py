from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saliqa.iqa.base import PatchGrid
from saliqa.pipeline.mapstore import MapStore, write_map_shard


def test_round_trip_across_shards_with_varied_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    expected = {}
    for shard, sizes in enumerate([[(384, 512), (33, 70)], [(100, 100)]]):
        ids, maps, grids = [], [], []
        for k, (h, w) in enumerate(sizes):
            grid = PatchGrid.regular(h, w, 16)
            m = rng.random(grid.shape).astype(np.float32)
            m[0, 0] = np.nan
            ids.append(f"class/{shard}_{k}.jpg")
            maps.append(m)
            grids.append(grid)
            expected[ids[-1]] = (m, grid)
        write_map_shard(tmp_path / f"part-{shard:05d}.npz", ids, maps, grids)
    store = MapStore(tmp_path)
    assert len(store) == 3 and store.ids() == sorted(expected)
    for image_id, (m, grid) in expected.items():
        got, got_grid = store.get(image_id)
        np.testing.assert_array_equal(got, m)
        assert got_grid == grid
    assert "nope" not in store
    with pytest.raises(KeyError):
        store.get("nope")


def test_grid_geometry() -> None:
    grid = PatchGrid.regular(33, 70, 16)
    assert grid.shape == (3, 5)
    assert grid.row_edges == (0.0, 16.0, 32.0, 33.0)
    assert grid.col_edges[-2:] == (64.0, 70.0)
    lin = PatchGrid.linspace(224, 224, 7, 7)
    assert lin.shape == (7, 7) and lin.col_edges[1] == 32.0


def test_shape_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        write_map_shard(
            tmp_path / "x.npz", ["a"], [np.zeros((2, 2), np.float32)], [PatchGrid.regular(64, 64, 16)]
        )
    assert not list(tmp_path.iterdir())
