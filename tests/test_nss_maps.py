"""NIQE's and BRISQUE's sliding-window maps: an option beside the release's 96-pixel tiling.

The windows are checked against an independent loop that crops each window by hand from the whole image's
MSCN maps and computes the release's formulas on it; the picture score must not move; the release's
tiling stays the default (its official numbers are pinned in test_niqe.py and test_brisque.py, unchanged);
bad settings are config errors; and the map reaches explain's 7 x 7 grid, in a small run.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_batch_equals_one_by_one, load_image, make_folder_dataset, photo_batch

from saliqa.config import config_from_dict
from saliqa.errors import ConfigError
from saliqa.explain.compare import damage_map, pair_scores
from saliqa.explain.similarity import overlap_resample
from saliqa.iqa.brisque import BRISQUE, brisque, predict, single_scale_features
from saliqa.iqa.matlab import imresize_half, mscn, rgb_to_gray
from saliqa.iqa.niqe import NIQE, niqe, patch_features
from saliqa.iqa.nss import ImageTooSmall, SlidingMap, window_features
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.explanation import comparison_grid

TID = ("I03", "I04", "I06", "I08", "I19")


@pytest.fixture(scope="module")
def params(shared_data: Path) -> Path:
    return shared_data / "iqa_params"


@pytest.fixture(scope="module")
def niqe_model(params: Path) -> NIQE:
    return NIQE(params / "niqe_image_params.mat")


@pytest.fixture(scope="module")
def brisque_model(params: Path) -> BRISQUE:
    return BRISQUE(params / "brisque_live_allmodel", params / "brisque_live_allrange.txt")


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Window starts written out plainly: every stride, then one flush with the border on an even pixel."""
    starts = []
    start = 0
    while start + patch <= size:
        starts.append(start)
        start += stride
    flush = size - patch if (size - patch) % 2 == 0 else size - patch - 1
    if flush > starts[-1]:
        starts.append(flush)
    return starts


def _by_hand(gray: np.ndarray, patch: int, stride: int, padding: str, features: object) -> np.ndarray:
    """Two-scale features of each window, one window at a time: crop the whole image's MSCN maps by hand."""
    image = torch.from_numpy(gray)[None, None]
    full = mscn(image, padding=padding)[0][0, 0]
    half = mscn(imresize_half(image), padding=padding)[0][0, 0]
    rows, cols = _starts(gray.shape[0], patch, stride), _starts(gray.shape[1], patch, stride)
    out = np.zeros((len(rows), len(cols), 36))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            first = full[r : r + patch, c : c + patch].clone()
            second = half[r // 2 : r // 2 + patch // 2, c // 2 : c // 2 + patch // 2].clone()
            out[i, j] = torch.cat([features(first), features(second)]).numpy()
    return out


def _odd_photo() -> torch.Tensor:
    """One real photo of odd width (250 x 301): the last windows are placed flush with the border."""
    from skimage import data

    return torch.from_numpy(data.astronaut()[100:350, 50:351]).permute(2, 0, 1)[None].double() / 255


# -- the windows against a loop by hand ----------------------------------------------------------------------------


def test_niqe_windows_equal_the_distance_of_each_window_cropped_by_hand(niqe_model: NIQE) -> None:
    image = _odd_photo()
    sliding = SlidingMap(96, 16)
    result = niqe(image, niqe_model.mu_pristine, niqe_model.cov_pristine, sliding=sliding)
    gray = rgb_to_gray(image)[0, 0].numpy()
    windows = _by_hand(gray, 96, 16, "replicate", patch_features)
    # The metric of the release's score: pristine covariance and the covariance of the release's 96-pixel tiles.
    tiles = result.features[0].reshape(-1, 36).numpy()
    tiles = tiles[~np.isnan(tiles).any(axis=1)]
    mu_p, cov_p = niqe_model.mu_pristine.numpy(), niqe_model.cov_pristine.numpy()
    metric = np.linalg.pinv((cov_p + np.cov(tiles, rowvar=False)) / 2, rcond=36 * np.finfo(float).eps)
    diff = mu_p - windows
    expected = np.sqrt(np.einsum("ijf,fg,ijg->ij", diff, metric, diff))
    assert result.patch_score.shape == (1, 11, 14)  # 250: 0, 16, ..., 144 and 154; 301: 0, ..., 192 and 204
    np.testing.assert_allclose(result.patch_score[0].numpy(), expected, rtol=1e-9)
    # the same metric gives the release's score (the distance of the tiles' mean): the yardstick is the score's
    mean = np.nanmean(result.features[0].reshape(-1, 36).numpy(), axis=0)
    assert float(result.score[0]) == pytest.approx(
        math.sqrt((mu_p - mean) @ metric @ (mu_p - mean)), rel=1e-9
    )


def test_brisque_windows_equal_the_svr_score_of_each_window_cropped_by_hand(brisque_model: BRISQUE) -> None:
    image = _odd_photo()
    result = brisque(image, brisque_model.model, brisque_model.ranges, sliding=SlidingMap(64, 32))
    gray = rgb_to_gray(image)[0, 0].numpy()
    windows = _by_hand(gray, 64, 32, "zero", single_scale_features)
    expected = np.array(
        [
            [float(predict(torch.from_numpy(w), brisque_model.model, brisque_model.ranges)) for w in row]
            for row in windows
        ]
    )
    assert result.patch_score.shape == (1, 7, 9)  # 250: 0..160 + 186; 301: 0..224 + 236
    np.testing.assert_allclose(result.patch_score[0].numpy(), expected, rtol=1e-12, atol=1e-9)


def test_cells_lie_halfway_between_window_centres(niqe_model: NIQE) -> None:
    out = niqe_model.use_sliding_map(SlidingMap(96, 16))(_odd_photo())
    niqe_model.use_sliding_map(None)
    for edges, size in ((out.grid.row_edges, 250), (out.grid.col_edges, 301)):
        centres = [s + 48 for s in _starts(size, 96, 16)]
        assert edges == (0.0, *[(a + b) / 2 for a, b in pairwise(centres)], float(size))


def test_window_groups_do_not_change_a_number() -> None:
    coeffs = torch.randn(3, 130, 150, dtype=torch.float64)
    rows, cols = [0, 10, 34], [0, 20, 40, 86]
    one = window_features(coeffs, rows, cols, 64, patch_features, max_values=1)
    many = window_features(coeffs, rows, cols, 64, patch_features, max_values=2**30)
    assert one.shape == (3, 3, 4, 18) and torch.equal(one, many)
    alone = window_features(coeffs[1:2], rows, cols, 64, patch_features)
    assert torch.equal(alone[0], many[1])


@pytest.mark.parametrize("name", ["niqe", "brisque"])
def test_sliding_batch_equals_one_by_one(name: str, niqe_model: NIQE, brisque_model: BRISQUE) -> None:
    model = {"niqe": niqe_model, "brisque": brisque_model}[name].use_sliding_map(SlidingMap(96, 32))
    try:
        assert_batch_equals_one_by_one(model, photo_batch(height=224, width=224))
    finally:
        model.use_sliding_map(None)


# -- the release is untouched ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["niqe", "brisque"])
def test_picture_score_is_identical_with_either_map(
    name: str, niqe_model: NIQE, brisque_model: BRISQUE, shared_data: Path
) -> None:
    model = {"niqe": niqe_model, "brisque": brisque_model}[name]
    folder = shared_data / "iqa_calibration" / "dist_dir"
    tid = torch.cat([load_image(folder / f"{image}.bmp") for image in TID])  # the official images
    for batch in (tid, photo_batch(height=224, width=224), _odd_photo()):
        release = model.use_sliding_map(None)(batch)
        for sliding in (SlidingMap(), SlidingMap(96, 32), SlidingMap(64, 8)):
            windows = model.use_sliding_map(sliding)(batch)
            assert torch.equal(windows.score, release.score) and torch.equal(windows.quality, release.quality)
            assert windows.category == release.category
    model.use_sliding_map(None)


@pytest.mark.parametrize("name", ["niqe", "brisque"])
def test_stride_of_one_patch_on_multiples_of_96_is_the_release_map(
    name: str, niqe_model: NIQE, brisque_model: BRISQUE
) -> None:
    model = {"niqe": niqe_model, "brisque": brisque_model}[name]
    batch = photo_batch(height=288, width=384)
    release = model.use_sliding_map(None)(batch)
    windows = model.use_sliding_map(SlidingMap(96, 96))(batch)
    model.use_sliding_map(None)
    assert windows.grid == release.grid and release.grid.shape == (3, 4)
    torch.testing.assert_close(windows.patch_map, release.patch_map, rtol=0, atol=0, equal_nan=True)


def test_release_tiling_is_the_default_and_the_fingerprint_names_a_sliding_map(params: Path) -> None:
    files = {"niqe": params / "niqe_image_params.mat"}
    release = load_quality_model("niqe", "cpu", files)
    assert release.sliding_map is None and "patch_map" not in release.fingerprint()
    assert release(photo_batch(height=224, width=224)).grid.shape == (3, 3)  # 2 x 2 tiles + unrated border
    sliding = load_quality_model("niqe", "cpu", files, sliding_map=SlidingMap(96, 16))
    assert sliding.fingerprint() == {**release.fingerprint(), "patch_map": "sliding(patch=96, stride=16)"}
    other = load_quality_model("niqe", "cpu", files, sliding_map=SlidingMap(96, 32))
    assert other.fingerprint()["patch_map"] != sliding.fingerprint()["patch_map"]
    with pytest.raises(ValueError, match="sliding map is for niqe and brisque"):
        load_quality_model("piqe", "cpu", sliding_map=SlidingMap())


# -- shapes and bad values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "stride", "side"),
    [(96, 16, 9), (96, 32, 5), (64, 32, 6), (96, 96, 3), (48, 8, 23), (224, 2, 1), (32, 32, 7)],
)
def test_map_shape_on_a_224_crop(patch: int, stride: int, side: int) -> None:
    grid = SlidingMap(patch, stride).grid(224, 224)
    assert grid.shape == (side, side) and grid.row_edges[0] == 0.0 and grid.row_edges[-1] == 224.0
    assert all(b > a for a, b in pairwise(grid.row_edges))
    assert len(_starts(224, patch, stride)) == side


def test_default_windows_reach_the_7x7_grid_and_the_release_tiles_do_not(niqe_model: NIQE) -> None:
    crops = photo_batch(height=224, width=224)
    release = niqe_model.use_sliding_map(None)(crops)
    windows = niqe_model.use_sliding_map(SlidingMap())(crops)
    niqe_model.use_sliding_map(None)
    assert windows.patch_map.shape == (3, 9, 9) and not torch.isnan(windows.patch_map).any()
    assert comparison_grid(release.grid, 7) == release.grid  # coarser: compared on its own 3 x 3 grid
    seven = comparison_grid(windows.grid, 7)
    assert seven.shape == (7, 7)
    on_grid = overlap_resample(
        windows.patch_map.double(),
        windows.grid.row_edges,
        windows.grid.col_edges,
        seven.row_edges,
        seven.col_edges,
    )
    # cell (0, 0) covers rows and columns 0..32: all of it in window (0, 0)'s cell (0..56)
    assert float(on_grid[0, 0, 0]) == pytest.approx(float(windows.patch_map[0, 0, 0]))
    # cell (1, 1) covers 32..64: 24 pixels of window 0's cell, 8 of window 1's, on both axes
    w = np.array([24.0, 8.0]) / 32
    expected = w @ windows.patch_map[0, :2, :2].double().numpy() @ w
    assert float(on_grid[0, 1, 1]) == pytest.approx(expected, rel=1e-12)
    # and it compares with an attribution map like any quality map
    attention = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(0)).double().numpy()
    quality = on_grid.numpy()
    for metric in ("cc", "spearman", "kld", "emd", "iou@20"):
        assert np.isfinite(pair_scores(attention, quality, metric)).all()
        assert np.isfinite(pair_scores(attention, damage_map(quality), metric)).all()


def test_images_smaller_than_a_window_are_rejected(brisque_model: BRISQUE) -> None:
    small = photo_batch(height=90, width=200)
    brisque_model.use_sliding_map(SlidingMap(96, 16))
    try:
        with pytest.raises(ImageTooSmall, match="side 90 < patch 96"):
            brisque_model(small)
    finally:
        brisque_model.use_sliding_map(None)


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ({"stride": 0}, "stride must be a positive even number of pixels, got 0"),
        ({"stride": -16}, "stride must be a positive even number"),
        ({"stride": 15}, "must be even"),
        ({"patch": 95}, "must be even"),
        ({"patch": 16, "stride": 8}, "too small for NIQE's and BRISQUE's block statistics: use at least 32"),
        ({"patch": 256}, "larger than the crop .evaluate.crop = 224.: no window fits"),
        ({"stride": 128}, "stride 128 is larger than the patch 96"),
        ({"size": 96}, "unknown key"),
    ],
)
def test_bad_sliding_maps_are_config_errors(windows: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"rate": {"iqa": "niqe"}, "explain": {"sliding_map": windows}})


def test_sliding_map_needs_an_nss_judge_and_is_absent_by_default() -> None:
    assert config_from_dict({}).explain.sliding_map is None
    with pytest.raises(ConfigError, match="explain.sliding_map is for niqe and brisque; rate.iqa = 'piqe'"):
        config_from_dict({"explain": {"sliding_map": {}}})
    chosen = config_from_dict({"rate": {"iqa": "brisque"}, "explain": {"sliding_map": {"stride": 32}}})
    assert chosen.explain.sliding_map.windows() == SlidingMap(96, 32)
    with pytest.raises(ValueError, match="positive even"):
        SlidingMap(96, 0)


# -- explain, in a small run ---------------------------------------------------------------------------------------


def test_explain_compares_the_sliding_map_on_the_7x7_grid_and_reruns_alone(
    params: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saliqa.io.tables import read_provenance
    from saliqa.pipeline.run import run_pipeline
    from saliqa.pipeline.tables import COMPARE, MAPS_INDEX

    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(params))
    root = make_folder_dataset(tmp_path / "dataset", per_class=2, side=240)
    values = {
        "data": {"source": "folder", "root": str(root)},
        "rate": {"iqa": "niqe", "device": "cpu", "workers": 0},
        "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.5},
        "train": {"epochs": 1, "batch_size": 2, "image_size": 64, "workers": 0, "device": "cpu"},
        "evaluate": {"corruptions": ["contrast"], "severities": [2], "workers": 0, "device": "cpu", "bootstrap": 100},
        "explain": {
            "methods": ["gradcam"], "metrics": ["cc", "kld"], "sample": 3, "sanity": False, "panels": 1,
            "bootstrap": 100, "batch_size": 8, "workers": 0, "device": "cpu",
        },
    }  # fmt: skip
    out = tmp_path / "run"
    run_pipeline(config_from_dict(values), out, progress=False, until="explain")
    assert set(MAPS_INDEX.read(out / "maps" / "index.parquet")["grid"]) == {"3x3"}  # the release's tiles
    assert "patch_map" not in read_provenance(out / "compare.parquet")["model"]

    values["explain"]["sliding_map"] = {"patch": 96, "stride": 16}
    results = run_pipeline(config_from_dict(values), out, progress=False, until="explain")
    assert [r.ran for r in results] == [False, False, False, False, True]  # only explain uses the map
    assert "explain.sliding_map" in results[-1].messages[0]
    index = MAPS_INDEX.read(out / "maps" / "index.parquet")
    assert (index["status"] == "ok").all() and set(index["grid"]) == {"7x7"}
    meta = read_provenance(out / "compare.parquet")
    assert meta["model"]["patch_map"] == "sliding(patch=96, stride=16)"
    assert meta["config"]["explain"]["sliding_map"] == {"patch": 96, "stride": 16}
    compare = COMPARE.read(out / "compare.parquet")
    quality = compare[(compare["method"] == "gradcam") & compare["reference"].isin(["quality", "damage"])]
    assert len(quality) > 0 and set(quality["grid"]) == {"7x7"} and quality["value"].notna().any()


def test_a_crop_set_by_published_transforms_is_checked_before_explain_starts() -> None:
    from saliqa.pipeline.stages.explain import EXPLAIN

    values = {
        "rate": {"iqa": "niqe"},
        "model": {"name": "torchvision:resnet18.IMAGENET1K_V1"},  # published: resize 256, crop 224
        "evaluate": {"crop": 160},
        "explain": {"sliding_map": {"patch": 192, "stride": 16}},
    }
    EXPLAIN.check(config_from_dict(values))  # fits the published 224 crop, though not evaluate.crop
    values["explain"]["sliding_map"]["patch"] = 240
    with pytest.raises(ConfigError, match="patch = 240 is larger than the 224-pixel crop"):
        EXPLAIN.check(config_from_dict(values))
