"""Map similarity metrics (MIT saliency benchmark conventions) and overlap resampling.

Expected values come from hand computation or from independent references written here: scipy's
pearsonr/spearmanr, plain-Python loops following the MIT MATLAB code, a scipy linprog transport LP for emd.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.optimize import linprog

from saliqa.explain.similarity import (
    DEFAULT_METRICS,
    METRICS,
    grid_edges,
    map_similarity,
    overlap_resample,
    similarity_metrics,
)

EPS = 2.2204e-16
ALL_METRICS = ("cc", "spearman", "sim", "kld", "emd", "iou@20")
CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# --------------------------------------------------------------------------- independent references


def ref_distribution(m: np.ndarray) -> list[float]:
    vals = [float(v) for v in np.asarray(m, dtype=np.float64).ravel()]
    lo = min(vals)
    if lo < 0:
        vals = [v - lo for v in vals]
    s = sum(vals)
    return [v / s for v in vals]


def ref_kld(pred: np.ndarray, ref: np.ndarray) -> float:
    """MIT KLdiv.m: sum(map2 .* log(eps + map2 ./ (map1 + eps))), map1 the prediction."""
    p, q = ref_distribution(pred), ref_distribution(ref)
    return sum(qi * math.log(EPS + qi / (pi + EPS)) for pi, qi in zip(p, q))


def ref_sim(a: np.ndarray, b: np.ndarray) -> float:
    """MIT similarity.m: min-max normalise, divide by the sum, sum of the minimum."""

    def norm(m: np.ndarray) -> list[float]:
        vals = [float(v) for v in m.ravel()]
        lo, hi = min(vals), max(vals)
        vals = [(v - lo) / (hi - lo) for v in vals]
        s = sum(vals)
        return [v / s for v in vals]

    return sum(min(x, y) for x, y in zip(norm(a), norm(b)))


def ref_emd(a: np.ndarray, b: np.ndarray) -> float:
    """Transport LP solved by scipy's HiGHS: min sum f_ij d_ij, rows sum to p, columns to q."""
    h, w = a.shape
    p, q = np.array(ref_distribution(a)), np.array(ref_distribution(b))
    pts = [(i, j) for i in range(h) for j in range(w)]
    n = len(pts)
    cost = np.array([math.dist(u, v) for u in pts for v in pts])
    a_eq = np.zeros((2 * n, n * n))
    for i in range(n):
        a_eq[i, i * n : (i + 1) * n] = 1.0
        a_eq[n + i, i::n] = 1.0
    res = linprog(cost, A_eq=a_eq, b_eq=np.concatenate([p, q]), bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


def ref_iou(a: np.ndarray, b: np.ndarray, k_percent: float) -> float:
    n = a.size
    k = math.ceil(k_percent * n / 100 - 1e-12)

    def top(m: np.ndarray) -> set[int]:
        vals = list(m.ravel())
        return set(sorted(range(n), key=lambda i: (-vals[i], i))[:k])

    sa, sb = top(a), top(b)
    return len(sa & sb) / len(sa | sb)


# --------------------------------------------------------------------------- API and shapes


def test_metric_names() -> None:
    assert similarity_metrics() == list(METRICS)
    assert METRICS == ("cc", "spearman", "sim", "kld", "emd", "iou@K")
    assert DEFAULT_METRICS == ("cc", "spearman", "sim", "kld", "emd", "iou@20")


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_single_map_gives_float_batch_gives_array(rng: np.random.Generator, metric: str) -> None:
    a, b = rng.random((3, 5, 6)), rng.random((3, 5, 6))
    single = map_similarity(a[1], b[1], metric)
    assert type(single) is float
    batch = map_similarity(a, b, metric)
    assert isinstance(batch, np.ndarray) and batch.shape == (3,) and batch.dtype == np.float64
    assert batch[1] == pytest.approx(single, rel=1e-12, abs=1e-15)
    assert map_similarity(a[:0], b[:0], metric).shape == (0,)


@pytest.mark.parametrize("metric", ALL_METRICS)
@pytest.mark.parametrize("device", ["cpu", *CUDA])
def test_numpy_and_torch_agree(rng: np.random.Generator, metric: str, device: str) -> None:
    a = rng.standard_normal((3, 6, 7)).astype(np.float32)
    b = rng.random((3, 6, 7)).astype(np.float32)
    expected = map_similarity(a, b, metric)
    got = map_similarity(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device), metric)
    np.testing.assert_array_equal(got, expected)
    mixed = map_similarity(a.astype(np.float64), torch.from_numpy(b).to(device).double(), metric)
    np.testing.assert_array_equal(mixed, expected)


# --------------------------------------------------------------------------- cc and spearman


def test_cc_against_pearsonr(rng: np.random.Generator) -> None:
    a, b = rng.random((4, 7, 7)), rng.random((4, 7, 7))
    b[0] = 2.0 * a[0] + 1.0  # perfect correlation
    b[1] = -a[1]
    got = map_similarity(a, b, "cc")
    want = [scipy.stats.pearsonr(x.ravel(), y.ravel())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(-1.0)


def test_spearman_with_ties_by_hand() -> None:
    a = np.array([[1.0, 2.0], [2.0, 3.0]])  # ranks 1, 2.5, 2.5, 4
    b = np.array([[4.0, 3.0], [2.0, 1.0]])  # ranks 4, 3, 2, 1
    # centred ranks: a -1.5, 0, 0, 1.5; b 1.5, 0.5, -0.5, -1.5 -> -4.5 / sqrt(4.5 * 5)
    want = -4.5 / math.sqrt(4.5 * 5.0)
    assert map_similarity(a, b, "spearman") == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(scipy.stats.spearmanr(a.ravel(), b.ravel())[0], rel=1e-12)


def test_spearman_against_spearmanr_with_many_ties(rng: np.random.Generator) -> None:
    a = rng.integers(0, 4, size=(5, 6, 6)).astype(np.float64)
    b = rng.integers(0, 3, size=(5, 6, 6)).astype(np.float64) + 0.5 * a
    got = map_similarity(a, b, "spearman")
    want = [scipy.stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # monotone transform leaves it unchanged
    np.testing.assert_allclose(map_similarity(np.exp(a), b**3, "spearman"), want, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- sim


def test_sim_by_hand() -> None:
    a = np.array([[0.0, 1.0], [2.0, 3.0]])  # -> 0, 1/6, 1/3, 1/2
    b = np.array([[3.0, 2.0], [1.0, 0.0]])  # -> 1/2, 1/3, 1/6, 0
    assert map_similarity(a, b, "sim") == pytest.approx(1.0 / 3.0, rel=1e-12)
    # min-max first: an offset or scale of either map does not change sim
    assert map_similarity(10.0 + 5.0 * a, b, "sim") == pytest.approx(1.0 / 3.0, rel=1e-12)


def test_sim_range_and_reference(rng: np.random.Generator) -> None:
    a, b = rng.random((6, 5, 5)) + 0.3, rng.standard_normal((6, 5, 5))
    got = map_similarity(a, b, "sim")
    np.testing.assert_allclose(got, [ref_sim(x, y) for x, y in zip(a, b)], rtol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()
    np.testing.assert_allclose(map_similarity(a, a, "sim"), 1.0, rtol=1e-12)
    disjoint = map_similarity(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), "sim")
    assert disjoint == 0.0


# --------------------------------------------------------------------------- kld


def test_kld_by_hand_and_asymmetric() -> None:
    uniform = np.ones((2, 2))
    point = np.array([[1.0, 0.0], [0.0, 0.0]])
    # q = point, p = uniform: 1 * log(eps + 1 / (0.25 + eps))
    want_ab = math.log(EPS + 1.0 / (0.25 + EPS))
    # q = uniform, p = point: 0.25 log(eps + 0.25 / (1 + eps)) + 3 * 0.25 log(eps + 0.25 / eps)
    want_ba = 0.25 * math.log(EPS + 0.25 / (1 + EPS)) + 0.75 * math.log(EPS + 0.25 / EPS)
    assert map_similarity(uniform, point, "kld") == pytest.approx(want_ab, rel=1e-12)
    assert map_similarity(point, uniform, "kld") == pytest.approx(want_ba, rel=1e-12)
    assert want_ab == pytest.approx(math.log(4.0))
    assert want_ba > 10 * want_ab
    assert map_similarity(uniform, uniform, "kld") == pytest.approx(0.0, abs=1e-14)


def test_kld_against_loop_reference(rng: np.random.Generator) -> None:
    a, b = rng.random((5, 6, 4)), rng.standard_normal((5, 6, 4))
    a[0, 0, 0] = 0.0  # a zero prediction cell where the reference has mass
    got = map_similarity(a, b, "kld")
    np.testing.assert_allclose(got, [ref_kld(x, y) for x, y in zip(a, b)], rtol=1e-12)
    back = map_similarity(b, a, "kld")
    np.testing.assert_allclose(back, [ref_kld(y, x) for x, y in zip(a, b)], rtol=1e-12)
    assert not np.allclose(got, back)


def test_kld_and_emd_subtract_minimum_only_if_negative() -> None:
    ref = np.array([[1.0, 0.0, 2.0], [0.5, 0.5, 3.0]])
    shifted = np.array([[0.0, 1.0], [2.0, 3.0]])
    negative = shifted - 1.0  # min -1 -> subtracted -> same distribution as `shifted`
    positive = shifted + 1.0  # min +1 -> not subtracted -> (1, 2, 3, 4) / 10
    ref4 = ref[:, :2]
    for metric in ("kld", "emd"):
        assert map_similarity(negative, ref4, metric) == pytest.approx(
            map_similarity(shifted, ref4, metric), rel=1e-12
        )
        assert map_similarity(ref4, negative, metric) == pytest.approx(
            map_similarity(ref4, shifted, metric), rel=1e-12
        )
        assert map_similarity(positive, ref4, metric) != pytest.approx(
            map_similarity(shifted, ref4, metric), rel=1e-6
        )
    assert map_similarity(positive, ref4, "kld") == pytest.approx(ref_kld(positive, ref4), rel=1e-12)


# --------------------------------------------------------------------------- emd


def test_emd_point_masses_and_identity(rng: np.random.Generator) -> None:
    a, b = np.zeros((4, 5)), np.zeros((4, 5))
    a[0, 0], b[2, 3] = 7.0, 0.5
    assert map_similarity(a, b, "emd") == pytest.approx(math.sqrt(2**2 + 3**2), rel=1e-12)
    m = rng.random((3, 6, 6))
    np.testing.assert_allclose(map_similarity(m, m, "emd"), 0.0, atol=1e-12)
    # half the mass moves one cell to the right
    c, d = np.array([[1.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 1.0]])
    assert map_similarity(c, d, "emd") == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (1, 6)])
def test_emd_against_linprog(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    a = rng.random((3, *shape))
    b = rng.standard_normal((3, *shape))  # negative cells: min subtraction
    a[0, 0, 0] = 0.0
    got = map_similarity(a, b, "emd")
    want = [ref_emd(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_emd_grid_size_limit(rng: np.random.Generator) -> None:
    ok = map_similarity(rng.random((32, 32)), rng.random((32, 32)), "emd")
    assert math.isfinite(ok) and ok > 0
    for shape in [(33, 33), (33, 2), (2, 33)]:
        with pytest.raises(ValueError, match="coarser grid"):
            map_similarity(np.ones(shape), np.ones(shape), "emd")


# --------------------------------------------------------------------------- iou


def test_iou_explicit_sets() -> None:
    a = np.array([[9.0, 8.0, 1.0, 0.0, 0.0], [7.0, 0.0, 0.0, 0.0, 0.0]])
    b = np.array([[9.0, 0.0, 8.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 7.0]])
    # N = 10; K = 20 -> 2 cells: A = {0, 1}, B = {0, 2} -> 1 / 3
    assert map_similarity(a, b, "iou@20") == pytest.approx(1 / 3)
    # K = 30 -> 3 cells: A = {0, 1, 5}, B = {0, 2, 9} -> 1 / 5
    assert map_similarity(a, b, "iou@30") == pytest.approx(1 / 5)
    # K = 25 -> ceil(2.5) = 3 cells, same as K = 30
    assert map_similarity(a, b, "iou@25") == pytest.approx(1 / 5)
    # K = 100: all cells
    assert map_similarity(a, b, "iou@100") == 1.0
    # K = 0.5 -> ceil(0.05) = 1 cell: {0} and {0}
    assert map_similarity(a, b, "iou@0.5") == 1.0


def test_iou_ties_go_to_lower_index() -> None:
    a = np.array([[1.0, 5.0, 5.0, 5.0], [5.0, 0.0, 0.0, 0.0]])  # top 2: {1, 2} (ties 1, 2, 3, 4)
    b = np.array([[0.0, 0.0, 3.0, 3.0], [3.0, 0.0, 0.0, 0.0]])  # top 2: {2, 3} (ties 2, 3, 4)
    assert map_similarity(a, b, "iou@25") == pytest.approx(1 / 3)
    constant, zero = np.full((2, 4), 2.0), np.zeros((2, 4))
    assert map_similarity(constant, zero, "iou@25") == 1.0  # both {0, 1}
    assert map_similarity(constant, a, "iou@25") == pytest.approx(1 / 3)  # {0, 1} vs {1, 2}


def test_iou_against_reference(rng: np.random.Generator) -> None:
    a = rng.integers(0, 5, size=(6, 7, 7)).astype(np.float64)
    b = rng.random((6, 7, 7))
    for k in (1, 10, 20, 33.3, 50, 100):
        got = map_similarity(a, b, f"iou@{k}")
        np.testing.assert_allclose(got, [ref_iou(x, y, k) for x, y in zip(a, b)], rtol=1e-15)


# --------------------------------------------------------------------------- degenerate maps


def test_degenerate_maps_give_nan_without_warnings(rng: np.random.Generator) -> None:
    normal = rng.random((5, 5))
    with_nan = normal.copy()
    with_nan[2, 3] = np.nan
    maps = {
        "constant": np.full((5, 5), 3.0),
        "zero": np.zeros((5, 5)),
        "nan": with_nan,
        "all_nan": np.full((5, 5), np.nan),
        "inf": np.where(np.arange(25).reshape(5, 5) == 7, np.inf, normal),
        "normal": normal,
    }
    a = np.stack(list(maps.values()))
    b = np.stack([rng.random((5, 5)) for _ in maps])
    nan_rows = {
        "cc": {"constant", "zero", "nan", "all_nan", "inf"},
        "spearman": {"constant", "zero", "nan", "all_nan", "inf"},
        "sim": {"constant", "zero", "nan", "all_nan", "inf"},
        "kld": {"zero", "nan", "all_nan", "inf"},
        "emd": {"zero", "nan", "all_nan", "inf"},
        "iou@20": {"nan", "all_nan", "inf"},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for metric in ALL_METRICS:
            for x, y in ((a, b), (b, a)):
                got = map_similarity(x, y, metric)
                is_nan = {name for name, v in zip(maps, got) if math.isnan(v)}
                assert is_nan == nan_rows[metric], metric
            for m in maps.values():
                map_similarity(m, m, metric)
                map_similarity(torch.from_numpy(m), torch.from_numpy(normal), metric)
    assert map_similarity(maps["zero"], maps["zero"], "iou@20") == 1.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("a", "b"),
    [(np.ones((3, 4)), np.ones((4, 3))), (np.ones((2, 3, 4)), np.ones((3, 4))), (np.ones(5), np.ones(5))],
)
def test_shape_errors(a: np.ndarray, b: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape"):
        map_similarity(a, b, "cc")


def test_four_dims_and_empty_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        map_similarity(np.ones((1, 2, 3, 4)), np.ones((1, 2, 3, 4)), "cc")
    with pytest.raises(ValueError, match="at least one cell"):
        map_similarity(np.ones((0, 3)), np.ones((0, 3)), "cc")


@pytest.mark.parametrize(
    "metric", ["pearson", "CC", "iou", "iou@", "iou@0", "iou@-5", "iou@101", "iou@abc", "iou@nan", "iou@K"]
)
def test_bad_metric_lists_the_metrics(metric: str) -> None:
    with pytest.raises(ValueError, match="spearman.*iou@K") as err:
        map_similarity(np.ones((2, 2)), np.ones((2, 2)), metric)
    assert repr(metric) in str(err.value)


# --------------------------------------------------------------------------- overlap_resample


def test_grid_edges() -> None:
    rows, cols = grid_edges(224, 200, 7, 4)
    assert rows == tuple(float(v) for v in np.linspace(0, 224, 8))
    assert cols == (0.0, 50.0, 100.0, 150.0, 200.0)
    assert all(type(v) is float for v in rows + cols)
    with pytest.raises(ValueError):
        grid_edges(224, 224, 0, 7)


def test_resample_identity(rng: np.random.Generator) -> None:
    v = rng.standard_normal((2, 5, 6))
    rows = np.cumsum(rng.random(6) + 0.1)
    cols = np.cumsum(rng.random(7) + 0.1)
    np.testing.assert_allclose(overlap_resample(v, rows, cols, rows, cols), v, rtol=1e-13)
    np.testing.assert_allclose(overlap_resample(v[0], rows, cols, rows, cols), v[0], rtol=1e-13)


def test_pixel_map_to_7x7_is_block_mean(rng: np.random.Generator) -> None:
    v = rng.random((3, 224, 224))
    edges = np.arange(225, dtype=np.float64)
    rows_to, cols_to = grid_edges(224, 224, 7, 7)
    got = overlap_resample(v, edges, edges, rows_to, cols_to)
    assert got.shape == (3, 7, 7) and got.dtype == np.float64
    np.testing.assert_allclose(got, v.reshape(3, 7, 32, 7, 32).mean(axis=(2, 4)), rtol=1e-12)


def brute_force(
    v: np.ndarray, rows_from: np.ndarray, cols_from: np.ndarray, rows_to, cols_to, sub: int, h: int, w: int
) -> np.ndarray:
    """Upsample blocks to a raster of 1/sub px (nearest block by sub-pixel centre), average per target cell.

    ``sub`` is chosen so that every source and target edge falls on the raster, which makes this exact.
    """
    yc = (np.arange(h * sub) + 0.5) / sub
    xc = (np.arange(w * sub) + 0.5) / sub
    bi = np.searchsorted(rows_from, yc, side="right") - 1
    bj = np.searchsorted(cols_from, xc, side="right") - 1
    fine = v[:, bi[:, None], bj[None, :]]
    ti = np.searchsorted(np.asarray(rows_to), yc, side="right") - 1
    tj = np.searchsorted(np.asarray(cols_to), xc, side="right") - 1
    out = np.zeros((v.shape[0], len(rows_to) - 1, len(cols_to) - 1))
    count = np.zeros(out.shape[1:])
    np.add.at(out, (slice(None), ti[:, None], tj[None, :]), fine)
    np.add.at(count, (ti[:, None], tj[None, :]), 1.0)
    return out / count


def test_3x3_linspace_blocks_onto_7x7_against_brute_force(rng: np.random.Generator) -> None:
    v = rng.standard_normal((2, 3, 3))
    rows_from, cols_from = (np.linspace(0, 224, 4),) * 2  # 74.67 px blocks
    rows_to, cols_to = grid_edges(224, 224, 7, 7)
    got = overlap_resample(v, rows_from, cols_from, rows_to, cols_to)
    want = brute_force(v, rows_from, cols_from, rows_to, cols_to, sub=3, h=224, w=224)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # target cell (0, 0) lies in block (0, 0); cell (2, 2) straddles all four of blocks (0..1, 0..1)
    assert got[0, 0, 0] == pytest.approx(v[0, 0, 0])


def test_16px_blocks_cut_by_border_against_brute_force(rng: np.random.Generator) -> None:
    h, w = 220, 200
    rows_from = np.append(np.arange(0, 209, 16), h).astype(np.float64)  # 14 blocks, last 12 px
    cols_from = np.append(np.arange(0, 193, 16), w).astype(np.float64)  # 13 blocks, last 8 px
    v = rng.random((2, 14, 13))
    rows_to, cols_to = grid_edges(h, w, 7, 7)  # 31.43 px by 28.57 px
    got = overlap_resample(v, rows_from, cols_from, rows_to, cols_to)
    want = brute_force(v, rows_from, cols_from, rows_to, cols_to, sub=7, h=h, w=w)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_resample_nan_blocks_ignored() -> None:
    v = np.array([[1.0, np.nan], [3.0, 5.0]])
    rows, cols = [0.0, 1.0, 3.0], [0.0, 2.0, 3.0]
    # block areas 2, (1, NaN), 4, 2 -> (2 * 1 + 4 * 3 + 2 * 5) / 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = overlap_resample(v, rows, cols, [0.0, 3.0], [0.0, 3.0])
        assert one.shape == (1, 1) and one[0, 0] == pytest.approx(3.0)
        same = overlap_resample(v, rows, cols, rows, cols)
        np.testing.assert_array_equal(np.isnan(same), np.isnan(v))
        np.testing.assert_allclose(same[~np.isnan(v)], v[~np.isnan(v)])
        # target columns [0, 2.5], [2.5, 3]: the first overlaps block column 0 by 2 and column 1 by 0.5,
        # the second only column 1 (NaN in row 0: no rated overlap)
        part = overlap_resample(v, rows, cols, rows, [0.0, 2.5, 3.0])
        np.testing.assert_allclose(part, [[1.0, np.nan], [(2 * 3 + 0.5 * 5) / 2.5, 5.0]], rtol=1e-12)
        all_nan = overlap_resample(np.full((2, 2), np.nan), rows, cols, [0.0, 3.0], [0.0, 3.0])
        assert np.isnan(all_nan).all()
        t = overlap_resample(torch.from_numpy(v), rows, cols, [0.0, 3.0], [0.0, 3.0])
        assert t.item() == pytest.approx(3.0)
        t_nan = overlap_resample(torch.full((2, 2), torch.nan), rows, cols, rows, cols)
        assert torch.isnan(t_nan).all()


@pytest.mark.parametrize("device", ["cpu", *CUDA])
@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [(torch.float32, torch.float32), (torch.float64, torch.float64), (torch.float16, torch.float32)],
)
def test_resample_torch_keeps_type_and_device(
    rng: np.random.Generator, device: str, dtype: torch.dtype, out_dtype: torch.dtype
) -> None:
    v = rng.random((2, 3, 3))
    v[0, 1, 1] = np.nan
    rows_from, cols_from = grid_edges(224, 224, 3, 3)
    rows_to, cols_to = grid_edges(224, 224, 7, 7)
    want = overlap_resample(v, rows_from, cols_from, rows_to, cols_to)
    t = torch.from_numpy(v).to(device=device, dtype=dtype)
    got = overlap_resample(t, rows_from, cols_from, rows_to, cols_to)
    assert isinstance(got, torch.Tensor) and got.device == t.device and got.dtype == out_dtype
    tol = 1e-12 if out_dtype == torch.float64 else 2e-3 if dtype == torch.float16 else 1e-6
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=tol, atol=tol)


def test_resample_extent_and_shape_checks() -> None:
    v = np.ones((3, 3))
    e = np.linspace(0, 224, 4)
    with pytest.raises(ValueError, match="same extent"):
        overlap_resample(v, e, e, np.linspace(0, 223, 8), np.linspace(0, 224, 8))
    with pytest.raises(ValueError, match="same extent"):
        overlap_resample(v, e, e, np.linspace(0, 224, 8), np.linspace(1, 224, 8))
    # within 1e-6 relative: accepted
    ok = overlap_resample(v, e, e, np.linspace(0, 224 * (1 + 1e-8), 8), np.linspace(0, 224, 8))
    np.testing.assert_allclose(ok, 1.0)
    with pytest.raises(ValueError, match="blocks"):
        overlap_resample(np.ones((3, 4)), e, e, e, e)
    with pytest.raises(ValueError, match="increasing"):
        overlap_resample(v, e[::-1], e, e, e)
    with pytest.raises(ValueError, match=r"\(B, r, c\)"):
        overlap_resample(np.ones(3), e, e, e, e)


# --------------------------------------------------------------------------- pysaliency cross-check


class TestAgainstPysaliency:
    """pysaliency (Kümmerer; the Tübingen/MIT benchmark's Python code), where it is installed.

    Tolerance: rtol 1e-10. pysaliency's SIM divides by the sum after subtracting the minimum only if
    negative, MATLAB's similarity.m (ours) min-max normalises first; the two agree when the minimum is <= 0,
    so the maps here have a minimum <= 0. Its CC gives 0 (ours NaN) for a constant map: not compared.
    """

    @pytest.fixture
    def maps(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for shape in [(7, 7), (5, 9), (16, 16)]:
            a, b = rng.standard_normal(shape), rng.random(shape)
            b.flat[0] = 0.0
            out += [(a, b), (b, a)]
        return out

    def test_cc_sim_kld(self, maps: list[tuple[np.ndarray, np.ndarray]]) -> None:
        metrics = pytest.importorskip("pysaliency.metrics")
        for a, b in maps:
            with np.errstate(all="ignore"):  # pysaliency takes log(0) of empty cells in KL
                want = {
                    "cc": metrics.CC(a, b),
                    "sim": metrics.SIM(a, b),
                    "kld": metrics.MIT_KLDiv(a, b),  # (prediction, reference)
                }
            for name, value in want.items():
                assert map_similarity(a, b, name) == pytest.approx(value, rel=1e-10, abs=1e-12), name

    def test_kld_positive_maps(self, rng: np.random.Generator) -> None:
        metrics = pytest.importorskip("pysaliency.metrics")
        for _ in range(4):
            a, b = rng.random((7, 7)) + 0.01, rng.random((7, 7)) + 0.01
            want = metrics.MIT_KLDiv(a, b)
            assert map_similarity(a, b, "kld") == pytest.approx(want, rel=1e-10)


def test_all_pairs_of_defaults_run(rng: np.random.Generator) -> None:
    a, b = rng.random((2, 7, 7)), rng.random((2, 7, 7))
    for metric, (x, y) in itertools.product(DEFAULT_METRICS, [(a, b), (b, a)]):
        assert np.isfinite(map_similarity(x, y, metric)).all()
