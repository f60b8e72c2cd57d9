"""Stage explain: comparisons, baselines, statistics, resume, and the judge's own attention."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_folder_dataset
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from saliqa.config import config_from_dict
from saliqa.explain.compare import compare_maps, damage_map, pair_scores
from saliqa.explain.statistics import eval_statistics, summarize_compare, weighted_auc
from saliqa.pipeline.explanation import ExplainWork
from saliqa.pipeline.run import run_pipeline
from saliqa.pipeline.stages.explain import stratified_sample
from saliqa.pipeline.tables import COMPARE, COMPARE_SUMMARY, MAPS_INDEX, SANITY, STATS

METHODS = ["gradcam", "saliency"]
METRICS = ["cc", "kld", "iou@20"]


def _config(root: Path, **explain: object) -> object:
    evaluate = {"crop": 96, "corruptions": ["contrast", "gaussian_noise"], "severities": [1, 3]}
    explained = {"methods": METHODS, "metrics": METRICS, "sample": 6, "sanity_sample": 2, "panels": 2}
    return config_from_dict(
        {
            "data": {"source": "folder", "root": str(root)},
            "rate": {"device": "cpu", "workers": 0},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.5},
            "train": {"epochs": 1, "batch_size": 4, "image_size": 64, "workers": 0, "device": "cpu"},
            "evaluate": {**evaluate, "workers": 0, "device": "cpu", "bootstrap": 100},
            "explain": {
                **explained,
                "bootstrap": 100,
                "batch_size": 8,
                "workers": 0,
                "device": "cpu",
                **explain,
            },
        }
    )


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("explain")
    root = make_folder_dataset(tmp / "dataset", per_class=4, side=112)
    out = tmp / "run"
    results = run_pipeline(_config(root), out, progress=False, until="explain")
    assert [r.name for r in results][-1] == "explain" and results[-1].ran
    return root, out


def test_explain_writes_its_tables_and_figures(explained: tuple[Path, Path]) -> None:
    _, out = explained
    index = MAPS_INDEX.read(out / "maps" / "index.parquet")
    ok = index[index["status"] == "ok"]
    images = ok["image_id"].nunique()
    assert images == 6 and len(index) == 6 * 5 and set(index["grid"]) == {"6x6"}  # PIQE's 16-pixel blocks
    compare = COMPARE.read(out / "compare.parquet")
    assert tuple(compare.columns) == COMPARE.columns
    metrics = len(METRICS) + 1  # kld in both directions
    sources = len(METHODS) + 3 + len(METHODS)  # methods, centre/sobel/random, shuffled pairing per method
    pairs = len(ok) * sources * 2 * metrics  # references: quality and damage (PIQE has no gradients)
    changes = (len(ok) - images) * (len(METHODS) + 1)  # distorted crops x (methods + Sobel)
    assert len(compare) == pairs + changes
    assert set(compare["reference"]) == {"quality", "damage", "quality_change"}
    assert set(compare["grid"]) == {"6x6"}
    # the damage map is the quality map upside down: CC changes sign, exactly
    cc = compare[compare["metric"] == "cc"].pivot_table(
        index=["image_id", "corruption", "severity", "method"], columns="reference", values="value"
    )
    both = cc[["quality", "damage"]].dropna()
    assert len(both) > 0 and np.allclose(both["quality"], -both["damage"])

    summary = COMPARE_SUMMARY.read(out / "compare_summary.parquet")
    na = summary[summary["reference"] == "quality_gradcam"]
    assert len(na) > 0 and (na["n"] == 0).all() and na["note"].str.contains("piqe has no gradients").all()
    row = summary[
        (summary["method"] == "gradcam") & (summary["reference"] == "quality") & (summary["metric"] == "cc")
        & (summary["corruption"] == "none")
    ].iloc[0]  # fmt: skip
    values = compare[
        (compare["method"] == "gradcam") & (compare["reference"] == "quality") & (compare["metric"] == "cc")
        & (compare["corruption"] == "none")
    ]["value"]  # fmt: skip
    assert row["n"] == values.notna().sum() and row["mean"] == pytest.approx(values.mean())
    assert row["lo"] <= row["mean"] <= row["hi"]
    shuffled = compare[
        (compare["method"] == "baseline:shuffled:gradcam") & (compare["reference"] == "quality")
        & (compare["metric"] == "cc") & (compare["corruption"] == "none")
    ]["value"]  # fmt: skip
    assert row["shuffled"] == pytest.approx(shuffled.mean())

    sanity = SANITY.read(out / "sanity.parquet")
    assert set(sanity["method"]) == set(METHODS) and set(sanity["metric"]) == {
        "spearman",
        "spearman_abs",
        "ssim",
    }
    trained = sanity[sanity["step"] == 0]
    assert (trained["layer"] == "trained").all() and np.allclose(trained["mean"], 1.0)
    assert sanity["layer"].iloc[3] == "net.head.8"  # the logits first
    stats = STATS.read(out / "stats.parquet")
    assert {"auc_quality_error", "pearson_top1_quality", "spearman_quality_prob_drop"} <= set(
        stats["statistic"]
    )
    for name in (
        "explain_contrast",
        "explain_gaussian_noise",
        "explain_sanity",
        "explain_change",
        "explain_panels",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0, name
    assert not (out / "explain.parts").exists()


def test_a_killed_explain_resumes_to_the_same_tables_whatever_the_runtime(
    explained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards of 1 image and loader workers instead of one shard in the main process; killed after two
    shards, then run again: the same compare table as the uninterrupted run."""
    root, out = explained
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "maps")
    (copy / "stages" / "explain.json").unlink()
    config = _config(root, shard_size=1, workers=1)
    real = ExplainWork.before_commit
    calls = {"n": 0}

    def dies_on_the_third(self: ExplainWork, index: int, items: list) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self, index, items)

    monkeypatch.setattr(ExplainWork, "before_commit", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, copy, progress=False, until="explain")
    monkeypatch.setattr(ExplainWork, "before_commit", real)
    results = run_pipeline(config, copy, progress=False, until="explain")
    assert [r.ran for r in results] == [False, False, False, False, True]
    assert any("2 shard(s) reused" in m for m in results[-1].messages)
    pd.testing.assert_frame_equal(
        pd.read_parquet(copy / "compare.parquet"), pd.read_parquet(out / "compare.parquet")
    )


def test_paq2piq_attention_is_compared_like_the_quality_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saliqa.classify.p2p import P2PNet

    torch.manual_seed(5)
    torch.save({"model": P2PNet(1).state_dict()}, tmp_path / "RoIPoolModel-fit.10.bs.120.pth")
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(tmp_path))
    root = make_folder_dataset(tmp_path / "dataset", per_class=3, side=112)
    values = _config(root, sample=4, sanity=False, panels=0, methods=["gradcam"]).model_dump(mode="json")
    values["rate"]["iqa"] = "paq2piq"
    values["evaluate"]["corruptions"] = ["contrast"]
    out = tmp_path / "run"
    results = run_pipeline(config_from_dict(values), out, progress=False, until="explain")
    assert not any("not applicable" in m for m in results[-1].messages)
    compare = COMPARE.read(out / "compare.parquet")
    own = compare[(compare["reference"] == "quality_gradcam") & (compare["method"] == "gradcam")]
    assert len(own) > 0 and own["value"].notna().any() and set(own["grid"]) == {"7x7"}
    assert not (out / "sanity.parquet").exists()


# -- the pieces, on numbers made by hand ---------------------------------------------------------------------


def _index(images: int, conditions: list[tuple[str, int]]) -> pd.DataFrame:
    rows = [("val", f"img{i}", c, s) for i in range(images) for c, s in conditions]
    return pd.DataFrame(rows, columns=["set", "image_id", "corruption", "severity"])


def test_compare_scores_maps_pairs_and_changes_as_defined() -> None:
    rng = np.random.default_rng(0)
    index = _index(4, [("none", 0), ("fog", 2)])
    quality = rng.random((8, 5, 5)) * 100
    same = quality.copy()
    compare = compare_maps(index, {"same": same}, {"quality": quality, "damage": damage_map(quality)},
                           ["cc", "kld"], grid="5x5", sobel=rng.random((8, 5, 5)), seed=3)  # fmt: skip
    cc = compare[(compare["method"] == "same") & (compare["metric"] == "cc")]
    assert np.allclose(cc[cc["reference"] == "quality"]["value"], 1.0)
    assert np.allclose(cc[cc["reference"] == "damage"]["value"], -1.0)
    kld = compare[(compare["method"] == "same") & (compare["reference"] == "quality")]
    assert np.allclose(kld[kld["metric"] == "kld"]["value"], 0.0, atol=1e-12)
    shuffled = compare[(compare["method"] == "baseline:shuffled:same") & (compare["metric"] == "cc")
                       & (compare["reference"] == "quality")]  # fmt: skip
    assert (shuffled["value"] < 0.999).all()  # never paired with itself
    change = compare[compare["reference"] == "quality_change"]
    assert set(change["corruption"]) == {"fog"} and np.allclose(
        change[change["method"] == "same"]["value"], 1.0
    )
    again = compare_maps(
        index, {"same": same}, {"quality": quality}, ["cc"], grid="5x5", sobel=quality, seed=3
    )
    other = compare_maps(
        index, {"same": same}, {"quality": quality}, ["cc"], grid="5x5", sobel=quality, seed=4
    )
    key = again["method"] == "baseline:shuffled:same"
    assert not np.allclose(again[key]["value"], other[key]["value"])


def test_unrated_cells_are_left_out_of_a_pair_and_degenerate_maps_give_nan() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 4, 4)), rng.random((3, 4, 4))
    b[0, 0, 0] = np.nan
    a[2] = np.nan  # a degenerate attribution map is stored as NaN
    cc = pair_scores(a, b, "cc")
    keep = np.isfinite(b[0])
    assert cc[0] == pytest.approx(scipy_stats.pearsonr(a[0][keep], b[0][keep])[0])
    assert cc[1] == pytest.approx(scipy_stats.pearsonr(a[1].ravel(), b[1].ravel())[0])
    assert np.isnan(cc[2]) and np.isnan(pair_scores(a, b, "emd")[0])


def test_summary_bootstraps_over_images_with_baselines_beside() -> None:
    compare = pd.DataFrame(
        {
            "set": "val", "corruption": "none", "severity": 0, "reference": "quality", "metric": "cc",
            "grid": "7x7", "image_id": [f"i{k}" for k in range(4)] * 3,
            "method": ["m"] * 4 + ["baseline:sobel"] * 4 + ["baseline:shuffled:m"] * 4,
            "value": [0.1, 0.2, 0.3, np.nan, 0.0, 0.0, 0.1, 0.1, -0.1, 0.1, 0.0, 0.0],
        }
    )  # fmt: skip
    summary = summarize_compare(compare, n_boot=200, seed=0).set_index("method")
    assert summary.loc["m", "n"] == 3 and summary.loc["m", "mean"] == pytest.approx(0.2)
    assert summary.loc["m", "sobel"] == pytest.approx(0.05) and summary.loc["m", "shuffled"] == pytest.approx(
        0.0
    )
    assert np.isnan(summary.loc["m", "centre"]) and np.isnan(summary.loc["baseline:sobel", "sobel"])
    assert 0.1 <= summary.loc["m", "lo"] <= 0.2 <= summary.loc["m", "hi"] <= 0.3


def test_auc_matches_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(2)
    quality = rng.integers(0, 10, 60).astype(float)  # many ties
    wrong = rng.random(60) < 0.4
    ours = weighted_auc(quality, wrong, np.ones((1, 60)))[0]
    assert ours == pytest.approx(roc_auc_score(wrong, -quality))  # low quality predicts an error
    counts = rng.integers(0, 3, 60).astype(float)
    repeated = np.repeat(np.arange(60), counts.astype(int))
    weighted = weighted_auc(quality, wrong, counts[None])[0]
    assert weighted == pytest.approx(roc_auc_score(wrong[repeated], -quality[repeated]))


def test_statistics_across_conditions_match_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    conditions = [("none", 0), ("fog", 1), ("fog", 3), ("noise", 2), ("noise", 4)]
    rows = []
    for i in range(30):
        for k, (c, s) in enumerate(conditions):
            q = 80 - 8 * k + rng.normal(0, 5)
            top1 = bool(rng.random() < 0.95 - 0.15 * k)
            rows.append({"set": "val", "image_id": f"i{i}", "corruption": c, "severity": s, "status": "ok",
                         "quality": q, "top1": top1, "prob_true": float(rng.random())})  # fmt: skip
    table = pd.DataFrame(rows)
    stats = eval_statistics(table, n_boot=300, seed=0).set_index(["statistic", "corruption", "severity"])
    means = table.groupby(["corruption", "severity"], sort=False)[["top1", "quality"]].mean()
    drops = means.loc[("none", 0)] - means.drop(index=("none", 0))
    expected = scipy_stats.pearsonr(drops["top1"], drops["quality"])[0]
    assert stats.loc[("pearson_top1_quality", "all", 0), "value"] == pytest.approx(expected)
    row = stats.loc[("auc_quality_error", "all", 0)]
    assert row["value"] == pytest.approx(roc_auc_score(~table["top1"], -table["quality"]))
    assert row["lo"] <= row["value"] <= row["hi"] and row["n"] == 30
    fog = table[table["corruption"] == "fog"]
    clean = table[table["corruption"] == "none"].set_index("image_id")
    one = fog[fog["severity"] == 3].set_index("image_id")
    rho = scipy_stats.spearmanr(clean["quality"] - one["quality"], clean["prob_true"] - one["prob_true"])[0]
    assert stats.loc[("spearman_quality_prob_drop", "fog", 3), "value"] == pytest.approx(rho)


def test_the_sample_is_stratified_and_seeded() -> None:
    frame = pd.DataFrame(
        {
            "image_id": [f"{c}{i}" for c in "abc" for i in range(10)],
            "label": [*"a" * 10, *"b" * 10, *"c" * 10],
        }
    )
    picked = stratified_sample(frame, 7, seed=1, eval_set="val")
    assert sorted(picked["label"].value_counts().tolist()) == [2, 2, 3]
    assert picked.equals(stratified_sample(frame.iloc[::-1], 7, seed=1, eval_set="val"))
    assert not picked.equals(stratified_sample(frame, 7, seed=2, eval_set="val"))


def test_one_image_from_the_command_line_gives_the_stage_s_numbers(
    explained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`saliqa explain IMAGE` with a run's image id, crop and seed reproduces that run's comparison."""
    from saliqa.cli import main

    root, out = explained
    compare = COMPARE.read(out / "compare.parquet")
    row = compare[
        (compare["method"] == "gradcam") & (compare["reference"] == "quality") & (compare["metric"] == "cc")
        & (compare["corruption"] == "gaussian_noise") & (compare["severity"] == 3) & compare["value"].notna()
    ].iloc[0]  # fmt: skip
    panel = tmp_path / "panel.png"
    args = ["explain", str(root / row["image_id"]), "--checkpoint", str(out / "model" / "best.pt")]
    args += ["--corruption", "gaussian_noise", "--severity", "3", "--crop", "96", "--device", "cpu"]
    assert main([*args, "--image-id", row["image_id"], "--out", str(panel)]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert float(lines["cc with the quality map"]) == pytest.approx(row["value"], abs=1e-4)
    assert lines["grid"] == "6x6" and panel.stat().st_size > 0
