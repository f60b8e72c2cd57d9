"""BRISQUE against the LIVE release's official scores, its libsvm pieces, and its QualityModel contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_batch_equals_one_by_one, load_image, photo_batch

from saliqa.errors import CheckpointError, WeightsNotFoundError
from saliqa.iqa.brisque import (
    BRISQUE,
    QUALITY_MIDPOINT,
    FeatureRanges,
    SvrModel,
    brisque_quality,
    load_ranges,
    load_svr_model,
    svm_scale,
    svr_predict,
)
from saliqa.iqa.categories import CATEGORIES, categorize_quality

OFFICIAL = {  # official BRISQUE (LIVE release, libsvm), iqa_calibration/results_official.csv
    "I03": (94.6421, 1.0),
    "I04": (-0.107618, 0.05),
    "I06": (0.992889, 0.05),
    "I08": (5.35827, 1.0),
    "I19": (72.2617, 1.0),
}
"""Image: (score, absolute tolerance in points). I03, I08 and I19 have large flat regions whose last-bit
MSCN residue moves the score (GUIDE section 5), hence the looser tolerance."""


@pytest.fixture(scope="module")
def paths(shared_data: Path) -> tuple[Path, Path]:
    folder = shared_data / "iqa_params"
    return folder / "brisque_live_allmodel", folder / "brisque_live_allrange.txt"


@pytest.fixture(scope="module")
def model(paths: tuple[Path, Path]) -> BRISQUE:
    return BRISQUE(*paths)


def test_calibration_against_official_scores(model: BRISQUE, shared_data: Path) -> None:
    folder = shared_data / "iqa_calibration" / "dist_dir"
    images = torch.cat([load_image(folder / f"{name}.bmp") for name in OFFICIAL])
    scores = model(images).score
    for (name, (official, tolerance)), score in zip(OFFICIAL.items(), scores.tolist(), strict=True):
        assert abs(score - official) <= tolerance, (name, score, official)


def test_live_model_file_is_parsed(paths: tuple[Path, Path]) -> None:
    svr = load_svr_model(paths[0])
    assert svr.support_vectors.shape == (774, 36) and svr.coef.shape == (774,)
    assert svr.gamma == 0.05 and svr.rho == -153.591
    assert svr.support_vectors[0, 0] == -0.596978 and svr.coef[0] == -1024
    ranges = load_ranges(paths[1])
    assert (ranges.lower, ranges.upper) == (-1.0, 1.0)
    assert (ranges.minimum[0], ranges.maximum[0]) == (0.338, 10.0)
    assert (ranges.minimum[35], ranges.maximum[35]) == (0.001118, 0.370399)


def test_svm_scale_follows_libsvm(tmp_path: Path) -> None:
    ranges = FeatureRanges(-1.0, 1.0, np.zeros(36), np.full(36, 2.0))
    ranges.maximum[5] = 0.0  # a single-valued feature is dropped (0 in the sparse vector)
    x = np.full((1, 36), 0.5)
    x[0, :4] = [0.0, 2.0, 3.0, 1.23456789]
    scaled = svm_scale(x, ranges)[0]
    assert scaled[0] == -1.0 and scaled[1] == 1.0 and scaled[2] == 2.0  # bounds exact, no clipping
    assert scaled[3] == float(f"{-1 + 2 * 1.234568 / 2:g}")  # %f in, %g out
    assert scaled[5] == 0.0 and scaled[4] == -0.5
    # svm-scale's own file format (x, lower upper, index min max) reads the same as the LIVE text file
    own = tmp_path / "range"
    own.write_text("x\n-1 1\n" + "".join(f"{i + 1} 0 2\n" for i in range(36)))
    parsed = load_ranges(own)
    assert parsed.lower == -1 and np.array_equal(parsed.maximum, np.full(36, 2.0))


def test_svr_is_the_rbf_sum() -> None:
    rng = np.random.default_rng(9)
    svr = SvrModel(rng.uniform(-1, 1, (20, 36)), rng.normal(size=20), 0.05, -3.5)
    x = rng.uniform(-1, 1, (4, 36))
    expected = [
        sum(
            c * math.exp(-0.05 * np.sum((row - sv) ** 2))
            for c, sv in zip(svr.coef, svr.support_vectors, strict=True)
        )
        + 3.5
        for row in x
    ]
    np.testing.assert_allclose(svr_predict(torch.from_numpy(x), svr).numpy(), expected, rtol=1e-13)


def test_pyiqa_pth_layout_gives_the_same_scores(
    paths: tuple[Path, Path], model: BRISQUE, tmp_path: Path
) -> None:
    svr = load_svr_model(paths[0])
    pth = tmp_path / "brisque_svm_weights.pth"
    torch.save((torch.from_numpy(svr.coef), torch.from_numpy(svr.support_vectors)), pth)
    batch = photo_batch()[:1]
    assert torch.equal(BRISQUE(pth, paths[1])(batch).score, model(batch).score)
    bad = tmp_path / "bad.pth"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="sv_coef"):
        load_svr_model(bad)


def test_batch_equals_one_by_one(model: BRISQUE) -> None:
    assert_batch_equals_one_by_one(model, photo_batch())


def test_grey_input_equals_replicated_colour_and_float32_equals_float64(model: BRISQUE) -> None:
    batch = photo_batch()[:1]
    grey = torch.round(batch.mean(dim=1, keepdim=True) * 255) / 255
    assert torch.equal(model.rate(grey).score, model(grey.expand(-1, 3, -1, -1)).score)
    assert torch.equal(model(batch.to(torch.float32)).score, model(batch).score)


def test_output_contract_patch_map_and_grid(model: BRISQUE) -> None:
    out = model(photo_batch(height=250, width=300))
    assert out.score.dtype == torch.float64 and out.score.shape == (3,)
    assert ((out.quality >= 0) & (out.quality <= 100)).all()
    assert all(c in CATEGORIES for c in out.category)
    assert out.patch_map.dtype == torch.float32 and out.patch_map.shape == (3, 3, 4)
    assert out.grid.row_edges == (0.0, 96.0, 192.0, 250.0)
    assert not torch.isnan(out.patch_map[:, :2, :3]).any()
    assert torch.isnan(out.patch_map[:, 2]).all() and torch.isnan(out.patch_map[:, :, 3]).all()
    small = model(photo_batch(height=80, width=90))  # no full patch: an all-NaN map, still a score
    assert small.patch_map.shape == (3, 1, 1) and torch.isnan(small.patch_map).all()
    assert not torch.isnan(small.score).any()


def test_quality_mapping_is_decreasing_bounded_and_lands_the_tid_images_sensibly() -> None:
    score = torch.tensor([-20.0, -3.0, 0.0, QUALITY_MIDPOINT, 100.0, 130.0, math.nan], dtype=torch.float64)
    quality = brisque_quality(score)
    assert (quality[:-1].diff() < 0).all() and ((quality[:-1] >= 0) & (quality[:-1] <= 100)).all()
    assert quality[3].item() == 50.0 and math.isnan(quality[-1])
    tid = brisque_quality(torch.tensor([official for official, _ in OFFICIAL.values()], dtype=torch.float64))
    assert categorize_quality(tid.numpy()) == ["Bad", "Excellent", "Excellent", "Excellent", "Bad"]


def test_uniform_image_has_undefined_score(model: BRISQUE) -> None:
    out = model(torch.full((1, 3, 100, 100), 0.5, dtype=torch.float64))
    assert math.isnan(out.score.item()) and out.category == [None]


def test_fingerprint_hashes_both_files(paths: tuple[Path, Path], model: BRISQUE, tmp_path: Path) -> None:
    fingerprint = model.fingerprint()
    assert fingerprint["name"] == "brisque"
    assert len(fingerprint["model_sha256"]) == len(fingerprint["ranges_sha256"]) == 64
    ranges = tmp_path / "range.txt"
    ranges.write_text(paths[1].read_text().replace("0.338 10.0", "0.3 10.0"))
    assert BRISQUE(paths[0], ranges).fingerprint() != fingerprint
    assert BRISQUE(*paths).fingerprint() == fingerprint


def test_missing_and_wrong_files(paths: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="allmodel"):
        BRISQUE(tmp_path / "allmodel", paths[1])
    with pytest.raises(WeightsNotFoundError, match="allrange"):
        BRISQUE(paths[0], tmp_path / "allrange")
    wrong = tmp_path / "model.txt"
    wrong.write_text("svm_type c_svc\nkernel_type linear\nSV\n1 1:0.5\n")
    with pytest.raises(CheckpointError, match="RBF"):
        BRISQUE(wrong, paths[1])


def test_default_paths_come_from_find_weights(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    asked = []

    def find_weights(name: str, explicit: str | Path | None = None) -> Path:
        asked.append(name)
        return {"brisque_model": paths[0], "brisque_ranges": paths[1]}[name]

    monkeypatch.setitem(sys.modules, "saliqa.iqa.weights", types.SimpleNamespace(find_weights=find_weights))
    model = BRISQUE()
    assert (model.model_path, model.ranges_path) == paths and asked == ["brisque_model", "brisque_ranges"]


def reference_brisque_scale(structdis: np.ndarray) -> np.ndarray:
    """One scale of brisque_feature.m (estimateggdparam.m, estimateaggdparam.m) in plain numpy."""
    from scipy.special import gamma

    gam = np.arange(200, 10001) / 1000
    vec = structdis.ravel(order="F")
    sigma_sq = np.mean(vec**2)
    rho = sigma_sq / np.mean(np.abs(vec)) ** 2
    r_ggd = gamma(1 / gam) * gamma(3 / gam) / gamma(2 / gam) ** 2
    feat = [gam[np.argmin(np.abs(rho - r_ggd))], np.sqrt(sigma_sq) ** 2]
    r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))
    for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        pair = (structdis * np.roll(structdis, shift, axis=(0, 1))).ravel(order="F")
        left, right = np.sqrt(np.mean(pair[pair < 0] ** 2)), np.sqrt(np.mean(pair[pair > 0] ** 2))
        g = left / right
        rhat = np.mean(np.abs(pair)) ** 2 / np.mean(pair**2)
        alpha = gam[np.argmin((r_gam - rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2) ** 2)]
        const = np.sqrt(gamma(1 / alpha)) / np.sqrt(gamma(3 / alpha))
        feat += [alpha, (right - left) * (gamma(2 / alpha) / gamma(1 / alpha)) * const, left**2, right**2]
    return np.array(feat)


def test_features_match_a_plain_numpy_brisque_feature() -> None:
    from saliqa.iqa.brisque import brisque_features
    from saliqa.iqa.matlab import imresize_half, mscn, rgb_to_gray

    gray = rgb_to_gray(photo_batch(150, 170)[2:3])
    features, _ = brisque_features(gray)
    expected = []
    for image in (gray, imresize_half(gray)):
        expected.append(reference_brisque_scale(mscn(image, padding="zero")[0][0, 0].numpy()))
    np.testing.assert_allclose(features[0].numpy(), np.concatenate(expected), rtol=1e-12, atol=1e-15)
