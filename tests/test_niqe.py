"""NIQE against the LIVE release's official scores, and its properties as a QualityModel."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import assert_batch_equals_one_by_one, load_image, photo_batch

from saliqa.errors import CheckpointError, ImageRejected, WeightsNotFoundError
from saliqa.iqa.categories import CATEGORIES, categorize_quality
from saliqa.iqa.niqe import (
    NIQE,
    QUALITY_MIDPOINT,
    load_niqe_params,
    matlab_pinv,
    niqe_quality,
)
from saliqa.iqa.nss import ImageTooSmall

OFFICIAL = {  # official MATLAB NIQE (LIVE release), iqa_calibration/results_official.csv
    "I03": (15.7536293917814, 0.015),
    "I04": (3.65492152353770, 0.001),
    "I06": (3.23547743716998, 0.001),
    "I08": (3.18403333858339, 0.015),
    "I19": (8.63519663862637, 0.015),
}
"""Image: (score, relative tolerance). I03, I08 and I19 have large flat regions whose last-bit MSCN
residue moves the score (GUIDE section 5), hence the looser tolerance."""


@pytest.fixture(scope="module")
def params_path(shared_data: Path) -> Path:
    return shared_data / "iqa_params" / "niqe_image_params.mat"


@pytest.fixture(scope="module")
def model(params_path: Path) -> NIQE:
    return NIQE(params_path)


def test_calibration_against_official_matlab_scores(model: NIQE, shared_data: Path) -> None:
    folder = shared_data / "iqa_calibration" / "dist_dir"
    images = torch.cat([load_image(folder / f"{name}.bmp") for name in OFFICIAL])
    scores = model(images).score
    for (name, (official, tolerance)), score in zip(OFFICIAL.items(), scores.tolist(), strict=True):
        assert abs(score - official) / official <= tolerance, (name, score, official)


def test_batch_equals_one_by_one(model: NIQE) -> None:
    assert_batch_equals_one_by_one(model, photo_batch())


def test_grey_input_equals_replicated_colour_and_float32_equals_float64(model: NIQE) -> None:
    batch = photo_batch()[:1]
    grey = batch.mean(dim=1, keepdim=True)
    grey = torch.round(grey * 255) / 255
    as_colour = model(grey.expand(-1, 3, -1, -1)).score
    assert torch.equal(model.rate(grey).score, as_colour)
    assert torch.equal(model(batch.to(torch.float32)).score, model(batch).score)


def test_output_contract_patch_map_and_grid(model: NIQE) -> None:
    out = model(photo_batch(height=250, width=300))
    assert out.score.dtype == torch.float64 and out.score.shape == (3,)
    assert ((out.quality >= 0) & (out.quality <= 100)).all()
    assert all(c in CATEGORIES for c in out.category)
    assert out.patch_map.dtype == torch.float32 and out.patch_map.shape == (3, 3, 4)
    assert out.grid.shape == (3, 4) and out.grid.row_edges == (0.0, 96.0, 192.0, 250.0)
    assert out.grid.col_edges == (0.0, 96.0, 192.0, 288.0, 300.0)
    rated = out.patch_map[:, :2, :3]
    assert not torch.isnan(rated).any() and ((rated >= 0) & (rated <= 100)).all()
    assert torch.isnan(out.patch_map[:, 2]).all() and torch.isnan(out.patch_map[:, :, 3]).all()
    assert model.higher_is_better is False


def test_quality_mapping_is_decreasing_bounded_and_lands_the_tid_images_sensibly() -> None:
    score = torch.tensor([-5.0, 0.0, 2.0, QUALITY_MIDPOINT, 8.0, 20.0, 60.0, math.nan], dtype=torch.float64)
    quality = niqe_quality(score)
    assert (quality[:-1].diff() < 0).all() and ((quality[:-1] >= 0) & (quality[:-1] <= 100)).all()
    assert quality[3].item() == 50.0 and math.isnan(quality[-1])
    tid = niqe_quality(torch.tensor([official for official, _ in OFFICIAL.values()], dtype=torch.float64))
    assert categorize_quality(tid.numpy()) == ["Bad", "Good", "Good", "Good", "Bad"]


def test_uniform_image_has_undefined_score(model: NIQE) -> None:
    out = model(torch.full((1, 3, 192, 192), 0.5, dtype=torch.float64))
    assert math.isnan(out.score.item()) and math.isnan(out.quality.item()) and out.category == [None]
    assert torch.isnan(out.patch_map).all()


def test_images_below_two_patches_per_side_are_rejected(model: NIQE) -> None:
    with pytest.raises(ImageTooSmall, match="192x192") as caught:
        model(torch.zeros(1, 3, 191, 400))
    assert isinstance(caught.value, ImageRejected) and isinstance(caught.value, ValueError)
    model(torch.rand(1, 3, 192, 192))  # the smallest accepted size


def test_fingerprint_hashes_the_parameter_file(params_path: Path, model: NIQE, tmp_path: Path) -> None:
    mu, cov = load_niqe_params(params_path)
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"pop_mu": mu[None] * 1.01, "pop_cov": cov})
    fingerprint = model.fingerprint()
    assert fingerprint["name"] == "niqe" and len(fingerprint["params_sha256"]) == 64
    assert NIQE(other).fingerprint() != fingerprint
    assert NIQE(params_path).fingerprint() == fingerprint


def test_pyiqa_key_spelling_gives_the_same_scores(params_path: Path, model: NIQE, tmp_path: Path) -> None:
    mu, cov = load_niqe_params(params_path)
    pyiqa_file = tmp_path / "niqe_modelparameters.mat"
    scipy.io.savemat(pyiqa_file, {"mu_prisparam": mu[None], "cov_prisparam": cov})
    batch = photo_batch()[:1]
    assert torch.equal(NIQE(pyiqa_file)(batch).score, model(batch).score)


def test_missing_and_wrong_parameter_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "niqe_image_params.mat"
    with pytest.raises(WeightsNotFoundError, match="niqe_image_params.mat"):
        NIQE(missing)
    wrong = tmp_path / "wrong.mat"
    scipy.io.savemat(wrong, {"something": np.zeros(3)})
    with pytest.raises(CheckpointError, match="pop_mu"):
        NIQE(wrong)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a mat file")
    with pytest.raises(CheckpointError):
        NIQE(garbage)


def test_matlab_pinv_matches_numpy_pinv_and_drops_tiny_singular_values() -> None:
    rng = np.random.default_rng(8)
    a = rng.normal(size=(36, 5))
    singular = a @ a.T  # rank 5
    ours = matlab_pinv(torch.from_numpy(singular)).numpy()
    np.testing.assert_allclose(ours, np.linalg.pinv(singular, hermitian=True), atol=1e-10)


def test_default_path_comes_from_find_weights(params_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    asked = []

    def find_weights(name: str, explicit: str | Path | None = None) -> Path:
        asked.append(name)
        return params_path

    monkeypatch.setitem(sys.modules, "saliqa.iqa.weights", types.SimpleNamespace(find_weights=find_weights))
    assert NIQE().params_path == params_path and asked == ["niqe"]


def reference_computefeature(block: np.ndarray) -> np.ndarray:
    """NIQE's computefeature.m / estimateaggdparam.m for one block, in plain numpy (full grid scan)."""
    from scipy.special import gamma

    gam = np.arange(200, 10001) / 1000
    r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))

    def aggd(vec: np.ndarray) -> tuple[float, float, float]:
        left, right = np.sqrt(np.mean(vec[vec < 0] ** 2)), np.sqrt(np.mean(vec[vec > 0] ** 2))
        g = left / right
        rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
        rhatnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
        alpha = gam[np.argmin((r_gam - rhatnorm) ** 2)]
        root = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
        return alpha, left * root, right * root

    alpha, bl, br = aggd(block.ravel(order="F"))
    feat = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = aggd((block * np.roll(block, shift, axis=(0, 1))).ravel(order="F"))
        feat += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
    return np.array(feat)


def test_patch_features_match_a_plain_numpy_computefeature() -> None:
    from saliqa.iqa.matlab import mscn, rgb_to_gray
    from saliqa.iqa.niqe import patch_features
    from saliqa.iqa.nss import to_blocks

    coeffs = mscn(rgb_to_gray(photo_batch(192, 192)[1:2]))[0]
    blocks = to_blocks(coeffs, 96)
    ours = patch_features(blocks).numpy()
    for i in range(2):
        for j in range(2):
            expected = reference_computefeature(blocks[0, i, j].numpy())
            np.testing.assert_allclose(ours[0, i, j], expected, rtol=1e-12, atol=1e-15)
