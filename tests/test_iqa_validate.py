"""``saliqa iqa validate``: agreement metrics, the VQEG logistic, bootstrap intervals, the IQA set readers, the
command end to end, and NIQE's agreement on CLIVE checked against an independent NIQE written from the MATLAB
release."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage, stats
from scipy.io import loadmat, savemat
from scipy.special import gamma

from saliqa.cli import main
from saliqa.data.iqa_sets import CLIVE_HOMEPAGE, open_iqa_set, read_clive, read_mos_manifest
from saliqa.errors import ConfigError, DatasetError
from saliqa.iqa.validation import (
    METRICS,
    agreement,
    bootstrap_agreement,
    canonical_order,
    category_table,
    fit_logistic,
    krocc,
    plcc,
    rmse,
    srocc,
    vqeg_logistic,
)
from saliqa.pipeline.validate_iqa import validate_quality_model

OFFICIAL_NIQE_SROCC_LIVEC = 0.4505
"""pyiqa's benchmark table (iqa_calibration/NR_benchmark_results.csv): NIQE on all 1,162 LIVE Challenge pictures."""


def _synthetic(n: int = 300, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A judge's score and a MOS with a known logistic relation, noise and ties (rounded scores)."""
    rng = np.random.default_rng(seed)
    score = np.round(rng.uniform(0, 10, n), 1)
    mos = vqeg_logistic(score, 85.0, 15.0, 5.0, 1.2) + rng.normal(0, 6, n)
    return score, mos


# -- metrics -----------------------------------------------------------------------------------------------------
def test_metrics_agree_with_scipy_stats() -> None:
    score, mos = _synthetic()
    assert srocc(score, mos) == pytest.approx(stats.spearmanr(score, mos).statistic, abs=1e-12)
    assert krocc(score, mos) == pytest.approx(stats.kendalltau(score, mos).statistic, abs=1e-12)
    assert plcc(score, mos) == pytest.approx(stats.pearsonr(score, mos).statistic, abs=1e-12)
    assert rmse(score, mos) == pytest.approx(np.sqrt(np.mean((score - mos) ** 2)), rel=1e-12)
    line = np.polyval(np.polyfit(score, mos, 1), score)
    assert agreement(score, mos, higher_is_better=True)["rmse"] == pytest.approx(rmse(line, mos), rel=1e-9)
    assert np.isnan(srocc(np.ones(5), np.arange(5.0))) and np.isnan(plcc([1.0], [2.0]))


def test_logistic_fit_recovers_known_parameters() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, 2000)
    for true in ((90.0, 10.0, 4.0, 1.5), (10.0, 90.0, 6.0, 0.8)):  # rising, and falling (lower is better)
        y = vqeg_logistic(x, *true) + rng.normal(0, 0.5, x.size)
        fit = fit_logistic(x, y)
        assert fit.kind == "logistic"
        np.testing.assert_allclose(fit.params, true, rtol=0.02, atol=0.05)


def test_logistic_that_does_not_converge_falls_back_to_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    score, mos = _synthetic()

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr("saliqa.iqa.validation.curve_fit", fails)
    fit = fit_logistic(score, mos)
    assert fit.kind == "linear" and "did not converge" in fit.note
    np.testing.assert_allclose(fit(score), np.polyval(np.polyfit(score, mos, 1), score), rtol=1e-9)
    numbers = agreement(score, mos, higher_is_better=True)
    assert numbers["plcc_logistic"] == pytest.approx(abs(numbers["plcc"]), abs=1e-12)
    assert numbers["rmse_logistic"] == pytest.approx(numbers["rmse"], rel=1e-12)
    assert (
        fit_logistic([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]).kind == "linear"
    )  # too few pictures for 4 parameters


def test_a_lower_is_better_judge_shows_positive_agreement() -> None:
    score, mos = _synthetic()
    flipped = 20.0 - score  # the same judge on a lower-is-better scale
    up = agreement(score, mos, higher_is_better=True)
    down = agreement(flipped, mos, higher_is_better=False)
    assert down["srocc"] > 0.8 and down["krocc"] > 0.6 and down["plcc"] > 0.8 and down["plcc_logistic"] > 0.8
    for metric in METRICS:
        assert down[metric] == pytest.approx(up[metric], rel=1e-6, abs=1e-9), metric
    assert agreement(flipped, mos, higher_is_better=True)["srocc"] == pytest.approx(-up["srocc"])


def test_bootstrap_intervals_hold_the_estimate_and_are_seeded() -> None:
    score, mos = _synthetic(200)
    one = bootstrap_agreement(score, mos, higher_is_better=True, n_boot=300, seed=7)
    for metric, interval in one.metrics.items():
        assert interval.lo <= interval.value <= interval.hi, metric
        assert interval.n_boot == 300
    again = bootstrap_agreement(score, mos, higher_is_better=True, n_boot=300, seed=7)
    assert again.metrics == one.metrics
    other = bootstrap_agreement(score, mos, higher_is_better=True, n_boot=300, seed=8)
    assert other.metrics["srocc"].lo != one.metrics["srocc"].lo
    assert other.metrics["srocc"].value == one.metrics["srocc"].value
    # the canonical order makes the intervals independent of the order the pictures came in
    ids = [f"img{i:04d}" for i in range(score.size)]
    shuffle = np.random.default_rng(0).permutation(score.size)
    ordered = canonical_order(np.asarray(ids)[shuffle])
    moved = bootstrap_agreement(
        score[shuffle][ordered], mos[shuffle][ordered], higher_is_better=True, n_boot=300, seed=7
    )
    assert moved.metrics == one.metrics


def test_category_table_lists_every_category() -> None:
    score, mos = _synthetic(100)
    cats = np.where(score > 5, "Good", "Poor").tolist()
    rows = category_table(
        cats,
        score,
        mos,
        order=("Bad", "Poor", "Fair", "Good", "Excellent"),
        higher_is_better=True,
        n_boot=200,
    )
    assert [r["category"] for r in rows] == ["Bad", "Poor", "Fair", "Good", "Excellent"]
    assert sum(r["n"] for r in rows) == 100 and rows[0]["n"] == 0 and np.isnan(rows[0]["mos_mean"])
    good = rows[3]
    assert good["mos_lo"] <= good["mos_mean"] <= good["mos_hi"]
    assert good["mos_mean"] == pytest.approx(mos[score > 5].mean())
    assert good["srocc"] == pytest.approx(srocc(score[score > 5], mos[score > 5]))


# -- the readers -------------------------------------------------------------------------------------------------
def _photo(path: Path, seed: int, size: tuple[int, int] = (96, 72)) -> None:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)).save(path)


def test_manifest_reader_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    _photo(tmp_path / "pics" / "a.jpg", 0)
    (tmp_path / "m.csv").write_text("path,mos,std\npics/a.jpg,3.5,0.4\npics/b.jpg,2,\n", encoding="utf-8")
    table = read_mos_manifest(tmp_path / "m.csv")
    frame = table.frame.set_index("image_id")
    assert frame.loc["pics/a.jpg", "present"] and not frame.loc["pics/b.jpg", "present"]
    assert frame.loc["pics/a.jpg", "mos"] == 3.5 and np.isnan(frame.loc["pics/b.jpg", "mos_std"])
    assert table.name == "m" and table.mos_files == (tmp_path / "m.csv",)
    for text, fragment in (
        ("path,score\na.jpg,1\n", r"lacks the column\(s\) mos"),
        ("path,mos\na.jpg,good\n", "line 2: MOS 'good' is not a finite number"),
        ("path,mos\na.jpg,1\n./a.jpg,2\n", "duplicate path 'a.jpg'"),
    ):
        (tmp_path / "bad.csv").write_text(text, encoding="utf-8")
        with pytest.raises(DatasetError, match=fragment):
            read_mos_manifest(tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match="neither clive, koniq10k nor a CSV"):
        open_iqa_set("livec")


def test_clive_absent_says_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALIQA_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetError) as error:
        open_iqa_set("clive")
    text = str(error.value)
    assert CLIVE_HOMEPAGE in text and "--root" in text and "Images/" in text
    (tmp_path / "clive" / "Images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="has no MOS file"):
        read_clive(tmp_path / "clive")
    with pytest.raises(DatasetError, match="saliqa data download koniq10k"):
        open_iqa_set("koniq10k")


def test_clive_is_read_from_the_data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clive = tmp_path / "cache" / "clive"
    (clive / "Images").mkdir(parents=True)
    _photo(clive / "Images" / "7.JPG", 0)
    (clive / "scores.csv").write_text("image,mos,std\n7.JPG,55.5,12\n8.JPG,20,9\n", encoding="utf-8")
    monkeypatch.setenv("SALIQA_DATA_DIR", str(tmp_path / "cache"))
    table = open_iqa_set("clive")
    assert table.name == "clive" and table.mos_scale == "0-100" and table.mos_files == (clive / "scores.csv",)
    assert table.frame["mos"].tolist() == [55.5, 20.0] and table.frame["present"].tolist() == [True, False]
    assert table.records()["label"].tolist() == ["clive", "clive"]


def test_clive_from_the_release_mat_files_leaves_out_the_training_pictures(tmp_path: Path) -> None:
    """The release's Data/*.mat layout: 1,169 names of which 7 are the raters' training pictures."""
    root = tmp_path / "ChallengeDB_release"
    (root / "Images" / "trainingImages").mkdir(parents=True)
    (root / "Data").mkdir()
    names = ["t1.bmp", "10.bmp", "11.bmp", "12.bmp"]
    _photo(root / "Images" / "trainingImages" / "t1.bmp", 0)
    for i, name in enumerate(names[1:3]):
        _photo(root / "Images" / name, i)
    cells = np.empty((len(names), 1), dtype=object)
    cells[:, 0] = names
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[50.0, 61.5, 40.25, 70.0]])})
    savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.array([[1.0, 2.0, 3.0, 4.0]])})
    table = read_clive(root)
    assert table.frame["image_id"].tolist() == ["10.bmp", "11.bmp", "12.bmp"]
    assert table.frame["mos"].tolist() == [61.5, 40.25, 70.0] and table.frame["mos_std"].tolist() == [2, 3, 4]
    assert table.frame["present"].tolist() == [True, True, False]
    assert any("1 training pictures" in note for note in table.notes)


def test_koniq10k_from_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny KonIQ-10k in the catalog's layout, given with --root: MOS on the 1-5 scale, SD as std."""
    root = tmp_path / "koniq10k"
    (root / "1024x768").mkdir(parents=True)
    lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"]
    for i in range(8):
        _photo(root / "1024x768" / f"{1000 + i}.jpg", i, size=(128, 96))
        lines.append(f"{1000 + i}.jpg,0,1,2,1,0,4,{1.5 + i * 0.4:.2f},0.{i + 1},{30 + 5 * i}")
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["iqa", "validate", "--iqa", "piqe", "--data", "koniq10k", "--root", str(root)]
    assert main([*argv, "--out", str(out), "--device", "cpu", "--bootstrap", "50", "-q"]) == 0
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 8 and (scores["status"] == "ok").all()
    assert scores["mos"].tolist() == pytest.approx([1.5 + i * 0.4 for i in range(8)])
    assert scores["mos_std"].iloc[0] == pytest.approx(0.1)
    assert "MOS (1-5)" in capsys.readouterr().out


# -- the command -------------------------------------------------------------------------------------------------
def _clive_manifest(shared: Path, folder: Path, every: int, extra: str = "") -> Path:
    table = pd.read_csv(shared / "clive" / "clive_mos.csv").iloc[::every]
    lines = ["path,mos,std"] + [
        f"{shared / 'clive' / 'Images' / r.image},{r.mos},{r.std}" for r in table.itertuples(index=False)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "clive_subset.csv"
    manifest.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return manifest


def test_cli_writes_every_file_and_records_a_broken_picture(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "set"
    manifest = _clive_manifest(shared_data, folder, every=90, extra="broken.jpg,50,\ngone.jpg,40,\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff this is no JPEG")
    out = tmp_path / "out"
    argv = ["iqa", "validate", "--iqa", "piqe", "--data", str(manifest), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--bootstrap", "100", "--seed", "3", "-q"]) == 0
    printed = capsys.readouterr().out
    for name in (
        "scores.parquet", "scores.csv", "metrics.parquet", "metrics.csv", "categories.parquet",
        "categories.csv", "agreement.png", "agreement.svg", "provenance.json",
    ):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    scores = pd.read_parquet(out / "scores.parquet").set_index("image_id")
    assert (
        scores.loc["broken.jpg", "status"] == "rejected"
        and scores.loc["broken.jpg", "reason"] == "not an image"
    )
    assert scores.loc["gone.jpg", "status"] == "missing"
    ok = scores[scores["status"] == "ok"]
    assert len(ok) == 7 and ok["mos_fitted"].notna().all()
    metrics = pd.read_csv(out / "metrics.csv").set_index("metric")
    assert list(metrics.index) == list(METRICS) and (metrics["n"] == 7).all()
    assert (metrics["sign"] == "-score").all()  # PIQE is lower-is-better
    direct = agreement(ok["score"].to_numpy(), ok["mos"].to_numpy(), higher_is_better=False)
    assert metrics.loc["srocc", "value"] == pytest.approx(direct["srocc"])
    assert metrics.loc["srocc", "value"] == pytest.approx(stats.spearmanr(-ok["score"], ok["mos"]).statistic)
    record = json.loads((out / "provenance.json").read_text())
    assert record["judge"]["name"] == "piqe" and record["config"]["seed"] == 3
    assert record["dataset"]["mos_files"][0]["sha256"] and record["versions"]["saliqa"]
    assert record["fit"]["function"].startswith("f(x) = (b1 - b2)")
    assert (
        "srocc" in printed
        and "computed on -score" in printed
        and "2 of 9 pictures not in the metrics" in printed
    )
    categories = pd.read_csv(out / "categories.csv")
    assert categories["category"].tolist() == ["Bad", "Poor", "Fair", "Good", "Excellent"]
    assert categories["n"].sum() == 7
    # the same settings give the same numbers
    assert main([*argv, "--device", "cpu", "--bootstrap", "100", "--seed", "3", "-q"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv").set_index("metric"), metrics)


def test_missing_parameter_files_stop_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    argv = ["iqa", "validate", "--iqa", "niqe", "--data", str(tmp_path / "nothing.csv")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    assert "saliqa weights download niqe" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- NIQE against an independent implementation ------------------------------------------------------------------
def _matlab_cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * (
        (a > 1) & (a <= 2)
    )


def _imresize_matrix(n_in: int, scale: float) -> np.ndarray:
    """MATLAB imresize's ``contributions`` (bicubic, antialiased when shrinking, symmetric borders) as a matrix."""
    n_out = int(np.ceil(n_in * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    index = left[:, None] + np.arange(taps)[None, :]
    w = (
        (scale * _matlab_cubic(scale * (u[:, None] - index)))
        if scale < 1
        else _matlab_cubic(u[:, None] - index)
    )
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    index = mirror[(index.astype(int) - 1) % (2 * n_in)]
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.repeat(np.arange(n_out), taps), index.ravel()), w.ravel())
    return matrix


_GAM = 0.2 + 0.001 * np.arange(9801)  # 0.2:0.001:10
_R_GAM = gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))


def _aggd(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``estimateaggdparam.m`` on each row of ``v``: (alpha, beta_left, beta_right)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        neg, pos = v < 0, v > 0
        left = np.sqrt((v**2 * neg).sum(1) / neg.sum(1))
        right = np.sqrt((v**2 * pos).sum(1) / pos.sum(1))
        g = left / right
        rhat = np.abs(v).mean(1) ** 2 / (v**2).mean(1)
        rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
        diff = (_R_GAM[None, :] - rnorm[:, None]) ** 2
        alpha = _GAM[np.argmin(np.where(np.isnan(diff), np.inf, diff), axis=1)]
        ratio = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * ratio, right * ratio


def _patch_features(structdis: np.ndarray, size: int) -> np.ndarray:
    """``computefeature.m`` on every ``size`` x ``size`` block (``blkproc``): (patches, 18)."""
    h, w = structdis.shape
    blocks = structdis.reshape(h // size, size, w // size, size).transpose(0, 2, 1, 3).reshape(-1, size, size)
    alpha, bl, br = _aggd(blocks.reshape(len(blocks), -1))
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, bl, br = _aggd(pair.reshape(len(blocks), -1))
        feats += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
    return np.stack(feats, axis=1)


def reference_niqe(path: Path, mu_p: np.ndarray, cov_p: np.ndarray, patch: int = 96) -> float:
    """NIQE as ``computequality.m`` of the LIVE release computes it (written from the MATLAB, not from saliqa)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    im = np.round(rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103]))  # rgb2gray
    im = im[: im.shape[0] // patch * patch, : im.shape[1] // patch * patch]
    x = np.arange(-3, 4)
    window = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    window /= window.sum()  # fspecial('gaussian', 7, 7/6)
    feats = []
    for scale in (1, 2):
        mu = ndimage.correlate(im, window, mode="nearest")  # imfilter(..., 'replicate')
        sigma = np.sqrt(np.abs(ndimage.correlate(im * im, window, mode="nearest") - mu * mu))
        feats.append(_patch_features((im - mu) / (sigma + 1), patch // scale))
        im = _imresize_matrix(im.shape[0], 0.5) @ im @ _imresize_matrix(im.shape[1], 0.5).T
    feat = np.concatenate(feats, axis=1)
    mu_d = np.nanmean(feat, axis=0)
    cov_d = np.cov(feat[~np.isnan(feat).any(axis=1)], rowvar=False)  # nancov: complete rows
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2) @ d))


@pytest.fixture
def release_params(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    params = shared_data / "iqa_params"
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(params))
    return params


def _check_niqe_against_reference(
    shared: Path, params: Path, scores: pd.DataFrame, srocc_saliqa: float
) -> None:
    model = loadmat(params / "niqe_image_params.mat")
    mu_p, cov_p = model["pop_mu"].ravel().astype(float), model["pop_cov"].astype(float)
    ok = scores[scores["status"] == "ok"]
    start = time.monotonic()
    ours = np.array([reference_niqe(Path(p), mu_p, cov_p) for p in ok["path"]])
    seconds = time.monotonic() - start
    srocc_ref = srocc(-ours, ok["mos"].to_numpy())
    relative = np.abs(ok["score"].to_numpy() / ours - 1)
    print(
        f"NIQE SROCC on {len(ok)} CLIVE pictures: saliqa {srocc_saliqa:.4f}, independent {srocc_ref:.4f} "
        f"(|diff| {abs(srocc_saliqa - srocc_ref):.4f}); per-picture score median |rel diff| "
        f"{np.median(relative):.2e}, max {relative.max():.2e}; independent NIQE {seconds:.1f} s; "
        f"official (all 1,162 LIVE Challenge pictures) {OFFICIAL_NIQE_SROCC_LIVEC}"
    )
    assert abs(srocc_saliqa - srocc_ref) <= 0.02
    assert np.median(relative) < 0.01


def test_niqe_agreement_matches_an_independent_niqe_on_clive_pictures(
    shared_data: Path, release_params: Path, tmp_path: Path
) -> None:
    """Every 10th CLIVE picture (63): the SROCC saliqa reports equals an independent NIQE's within 0.02."""
    manifest = _clive_manifest(shared_data, tmp_path / "set", every=10)
    result = validate_quality_model(str(manifest), "niqe", out=tmp_path / "out", device="cpu", n_boot=50)
    assert len(result.scores) == 63
    _check_niqe_against_reference(
        shared_data, release_params, result.scores, result.metrics.set_index("metric").loc["srocc", "value"]
    )


@pytest.mark.slow
def test_niqe_agreement_on_all_627_clive_pictures(
    shared_data: Path, release_params: Path, tmp_path: Path
) -> None:
    """All 627 CLIVE pictures through --data clive: the independent check, and the number beside the official."""
    result = validate_quality_model(
        "clive", "niqe", root=shared_data / "clive", out=tmp_path / "out", device="cpu", n_boot=1000
    )
    assert len(result.scores) == 627 and (result.scores["status"] == "ok").all()
    srocc_saliqa = result.metrics.set_index("metric").loc["srocc", "value"]
    print(result.table())
    _check_niqe_against_reference(shared_data, release_params, result.scores, srocc_saliqa)
    assert 0.35 < srocc_saliqa < 0.55  # the official 0.4505 is on 1,162 pictures, this subset is 627


def test_curve_fit_is_what_fits_the_logistic() -> None:
    """The fit is scipy.optimize.curve_fit's least squares: no better point nearby."""
    score, mos = _synthetic()
    fit = fit_logistic(score, mos)
    sse = np.sum((fit(score) - mos) ** 2)
    for k in range(4):
        for step in (-1e-3, 1e-3):
            moved = list(fit.params)
            moved[k] *= 1 + step
            assert np.sum((vqeg_logistic(score, *moved) - mos) ** 2) >= sse * (1 - 1e-9)
