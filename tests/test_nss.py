"""The NSS building blocks of NIQE and BRISQUE: MATLAB imresize, the grid-search GGD/AGGD fits, shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gamma as gamma_fn
from scipy.stats import gennorm

from saliqa.errors import ImageRejected
from saliqa.iqa.matlab import gaussian_taps, imresize, imresize_contributions, imresize_half
from saliqa.iqa.nss import (
    ImageTooSmall,
    aggd_fit,
    ggd_fit,
    grid_table,
    nearest_grid_index,
    shifted_products,
    to_blocks,
)

# --- MATLAB imresize ------------------------------------------------------------------------------------


def matlab_cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def reference_resize_1d(v: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's imresize formula for one vector, written out pixel by pixel (independent of saliqa)."""
    n_in = len(v)
    n_out = math.ceil(scale * n_in)
    width = 4 / scale if scale < 1 else 4
    out = np.zeros(n_out)
    for x in range(1, n_out + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [
            (j, (scale * matlab_cubic(scale * (u - j)) if scale < 1 else matlab_cubic(u - j)))
            for j in range(left, left + math.ceil(width) + 2)
        ]
        total = sum(w for _, w in taps)
        acc = 0.0
        for j, w in taps:
            k = (j - 1) % (2 * n_in)  # symmetric: 1..n, n..1, repeated
            k = k if k < n_in else 2 * n_in - 1 - k
            acc += (w / total) * v[k]
        out[x - 1] = acc
    return out


def test_imresize_half_weights_are_the_dyadic_bicubic_taps() -> None:
    weights, indices = imresize_contributions(10, 5, 0.5)
    expected = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256
    np.testing.assert_array_equal(weights, np.tile(expected, (5, 1)))
    np.testing.assert_array_equal(indices[0], [2, 1, 0, 0, 1, 2, 3, 4])  # symmetric, edge repeated
    np.testing.assert_array_equal(indices[-1], [5, 6, 7, 8, 9, 9, 8, 7])


def test_imresize_half_of_a_ramp_matches_values_derived_by_hand() -> None:
    # Rows 1..8, constant along W: the weights are dyadic, so every sum is exact.
    # Output 1 sees rows (3, 2, 1, 1, 2, 3, 4, 5); output 2 sees rows (1, 1, 2, ..., 7).
    ramp = torch.arange(1, 9, dtype=torch.float64)[:, None].expand(8, 6)[None, None]
    out = imresize_half(ramp)
    assert out.shape == (1, 1, 4, 3)
    expected = torch.tensor([1.44921875, 3.48828125, 5.51171875, 7.55078125], dtype=torch.float64)
    assert torch.equal(out[0, 0], expected[:, None].expand(4, 3))


@pytest.mark.parametrize(
    ("height", "width", "scale"), [(17, 24, 0.5), (30, 9, 0.5), (11, 13, 0.37), (5, 7, 1.6)]
)
def test_imresize_matches_the_matlab_formula(height: int, width: int, scale: float) -> None:
    rng = np.random.default_rng(height * width)
    image = rng.uniform(0, 255, size=(height, width))
    rows = np.stack([reference_resize_1d(image[:, j], scale) for j in range(width)], axis=1)
    expected = np.stack([reference_resize_1d(rows[i], scale) for i in range(rows.shape[0])], axis=0)
    ours = imresize(torch.from_numpy(image)[None, None], scale)[0, 0].numpy()
    assert ours.shape == expected.shape == (math.ceil(scale * height), math.ceil(scale * width))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10)


def test_imresize_half_is_summed_tap_by_tap_along_h_then_w_without_rounding() -> None:
    rng = np.random.default_rng(3)
    image = np.round(rng.uniform(0, 255, size=(2, 1, 14, 20)))
    w = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256

    def along_last(x: np.ndarray) -> np.ndarray:
        n = x.shape[-1]
        padded = np.concatenate([x[..., 2::-1], x, x[..., : n - 4 : -1]], axis=-1)  # symmetric, 3 each side
        out = w[0] * padded[..., 0 : 2 * (n // 2) : 2]
        for k in range(1, 8):
            out = out + w[k] * padded[..., k : k + 2 * (n // 2) : 2]
        return out

    expected = along_last(along_last(image.swapaxes(-1, -2)).swapaxes(-1, -2))
    ours = imresize_half(torch.from_numpy(image)).numpy()
    np.testing.assert_array_equal(ours, expected)
    assert not np.all(ours == np.round(ours))  # doubles, not rounded


def test_imresize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4), 0.5)
    with pytest.raises(ValueError):
        imresize(torch.zeros(1, 1, 4, 4), 0.0)


# --- grid search ----------------------------------------------------------------------------------------


def test_grid_is_matlab_colon_0p2_to_10() -> None:
    alpha = grid_table("alpha").numpy()
    assert alpha.shape == (9801,) and alpha[0] == 0.2 and alpha[-1] == 10.0
    np.testing.assert_allclose(np.diff(alpha), 0.001, rtol=1e-9)


@pytest.mark.parametrize("name", ["ratio_ggd", "ratio_aggd"])
def test_nearest_grid_index_is_matlab_min_scan(name: str) -> None:
    ratio = grid_table(name)
    rng = np.random.default_rng(4)
    lo, hi = float(ratio.min()), float(ratio.max())
    x = torch.from_numpy(rng.uniform(lo - 0.1, hi + 0.1, size=500))
    x = torch.cat([x, ratio[[0, 17, 4000, -1]], (ratio[[10, 5000]] + ratio[[11, 5001]]) / 2])
    for squared in (True, False):
        index = nearest_grid_index(ratio, x, squared=squared)
        dist = (ratio[None] - x[:, None]) ** 2 if squared else torch.abs(x[:, None] - ratio[None])
        assert torch.equal(index, torch.argmin(dist, dim=1))  # argmin: first minimum, as MATLAB's min


def test_nearest_grid_index_gives_the_first_value_for_nan_and_inf() -> None:
    ratio = grid_table("ratio_aggd")
    x = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)
    assert nearest_grid_index(ratio, x, squared=True).tolist() == [0, 0, 0]


# --- fits -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0, 3.5])
def test_ggd_fit_recovers_gennorm_parameters(shape: float) -> None:
    scale = 0.7
    samples = gennorm.rvs(shape, scale=scale, size=(2, 200_000), random_state=np.random.default_rng(5))
    alpha, sigma, index = ggd_fit(torch.from_numpy(samples))
    assert alpha.shape == sigma.shape == index.shape == (2,)
    np.testing.assert_allclose(alpha.numpy(), shape, rtol=0.04)
    true_sigma = scale * math.sqrt(gamma_fn(3 / shape) / gamma_fn(1 / shape))
    np.testing.assert_allclose(sigma.numpy(), true_sigma, rtol=0.01)
    assert torch.equal(grid_table("alpha")[index], alpha)


@pytest.mark.parametrize(("shape", "beta_l", "beta_r"), [(0.8, 0.5, 1.2), (2.0, 1.0, 1.0), (1.5, 1.4, 0.3)])
def test_aggd_fit_recovers_asymmetric_parameters(shape: float, beta_l: float, beta_r: float) -> None:
    rng = np.random.default_rng(6)
    n = 400_000
    magnitude = np.abs(gennorm.rvs(shape, size=n, random_state=rng))
    left = rng.uniform(size=n) < beta_l / (beta_l + beta_r)  # AGGD mass on each side
    samples = np.where(left, -beta_l * magnitude, beta_r * magnitude)
    alpha, left_std, right_std, _ = aggd_fit(torch.from_numpy(samples)[None])
    assert alpha.item() == pytest.approx(shape, rel=0.05)
    root = math.sqrt(gamma_fn(3 / shape) / gamma_fn(1 / shape))
    assert left_std.item() == pytest.approx(beta_l * root, rel=0.02)
    assert right_std.item() == pytest.approx(beta_r * root, rel=0.02)


def test_aggd_fit_of_one_sided_values_is_nan_like_matlab_mean_of_empty() -> None:
    v = torch.tensor([[0.0, 1.0, 2.0, 0.5]], dtype=torch.float64)
    alpha, left_std, right_std, index = aggd_fit(v)
    assert math.isnan(left_std.item()) and right_std.item() > 0
    assert index.item() == 0 and alpha.item() == 0.2  # NaN ratio: MATLAB's min returns the first index


def test_shifted_products_are_circshift_products_within_the_last_two_dims() -> None:
    x = np.random.default_rng(7).normal(size=(2, 3, 5, 6))
    pairs = shifted_products(torch.from_numpy(x), [(0, 1), (1, -1)])
    for pair, shift in zip(pairs, [(0, 1), (1, -1)], strict=True):
        expected = (x * np.roll(x, shift, axis=(-2, -1))).reshape(2, 3, 30)
        np.testing.assert_array_equal(pair.numpy(), expected)
    # circshift(A, [1 -1]): B(i, j) = A(i-1, j+1)
    assert np.roll(x, (1, -1), axis=(-2, -1))[0, 0, 1, 2] == x[0, 0, 0, 3]


def test_to_blocks_cuts_row_major_blocks() -> None:
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(2, 1, 4, 6)
    blocks = to_blocks(x, 2)
    assert blocks.shape == (2, 2, 3, 2, 2)
    assert torch.equal(blocks[1, 1, 2], x[1, 0, 2:4, 4:6])


def test_image_too_small_is_an_image_rejection_and_a_value_error() -> None:
    error = ImageTooSmall("too small")
    assert isinstance(error, ImageRejected) and isinstance(error, ValueError)
    assert error.reason == "too small"


def test_gaussian_taps_are_normalised_by_a_left_to_right_sum() -> None:
    """NIQE and BRISQUE calibrate only with these exact taps (GUIDE section 5).

    The flat-region MSCN residue, and with it I19's NIQE/BRISQUE, moves with the last bit of the taps.
    ``gaussian_taps`` normalises by an explicit left-to-right sum: Python's ``sum`` is compensated from
    3.12 on and gave I19 BRISQUE +1.99 instead of -0.59 points there.
    """
    g = [math.exp(-(x * x) / (2.0 * (7 / 6) ** 2)) for x in range(-3, 4)]
    total = 0.0
    for v in g:
        total += v
    assert gaussian_taps(7, 7 / 6).tolist() == [v / total for v in g]
