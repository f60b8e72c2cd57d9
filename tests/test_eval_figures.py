"""Evaluation and training figures: valid PNGs, and the plotted data equals the summary."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from saliqa.report import eval_figures as ef
from saliqa.report.figures import OKABE_ITO
from saliqa.stats import SUMMARY_COLUMNS

CORRUPTIONS_19 = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
]  # fmt: skip


def _summary(corruptions: list[str], severities: tuple[int, ...] = (1, 2, 3), seed: int = 0) -> pd.DataFrame:
    """A summary table shaped like summarize_eval's output, with distinct numbers per row."""
    rng = np.random.default_rng(seed)
    conditions = [("none", 0)] + [(c, s) for c in corruptions for s in severities]
    rows = []
    for set_name in ("val", "test"):
        for corruption, severity in conditions:
            top1, top5, quality = rng.uniform(0.2, 0.6), rng.uniform(0.6, 0.95), rng.uniform(30, 80)
            rows.append(
                {
                    "set": set_name, "corruption": corruption, "severity": severity, "n": 100, "n_skipped": 0,
                    "top1_acc": top1, "top1_lo": top1 - 0.05, "top1_hi": top1 + 0.04,
                    "top5_acc": top5, "top5_lo": top5 - 0.03, "top5_hi": top5 + 0.03,
                    "mean_quality": quality, "quality_lo": quality - 2, "quality_hi": quality + 2.5,
                    "mean_score": quality, "score_lo": quality - 2, "score_hi": quality + 2.5,
                }
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _training_log(epochs: int = 5) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": e, "lr": 0.01 / e, "train_loss": 2.0 / e, "train_acc": 1 - 0.5 / e, "val_loss": 2.2 / e,
            "val_top1": 0.9 - 0.5 / e, "val_top5": 0.99 - 0.2 / e, "seconds": 10.0 * e,
        }
    )  # fmt: skip


def _check_png(path: Path) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0


def _line(ax: plt.Axes, gid: str):
    lines = [line for line in ax.get_lines() if line.get_gid() == gid]
    assert len(lines) == 1, gid
    return lines[0]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _variants() -> dict[str, pd.DataFrame]:
    nan = _summary(["contrast"])
    nan.loc[nan["corruption"] == "contrast", ["top1_lo", "top1_hi", "quality_lo", "top5_hi"]] = np.nan
    return {
        "typical": _summary(["contrast", "brightness"]),
        "one-severity": _summary(["contrast"], severities=(2,)),
        "clean-only": _summary([]),
        "nan-intervals": nan,
        "special-names": _summary(["a$b_c", "$x$", "low_light"]),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_every_figure_writes_a_png(tmp_path: Path, name: str) -> None:
    summary = _variants()[name]
    corruption = next((c for c in summary["corruption"] if c != "none"), "none")
    _check_png(ef.plot_corruption_curves(summary, corruption, tmp_path / "curves.png", judge="PIQE $1_a"))
    _check_png(ef.plot_corruption_overview(summary, tmp_path / "overview.png", judge="PIQE", eval_set="test"))
    _check_png(ef.plot_corruption_heatmap(summary, tmp_path / "heatmap.png", eval_set="test"))


def test_overview_png_with_19_corruptions(tmp_path: Path) -> None:
    _check_png(
        ef.plot_corruption_overview(_summary(CORRUPTIONS_19, (1, 2, 3, 4, 5)), str(tmp_path / "all.png"))
    )


def test_heatmap_of_19_by_5_shows_the_summarys_top1(tmp_path: Path) -> None:
    summary = _summary(CORRUPTIONS_19, (1, 2, 3, 4, 5))
    _check_png(ef.plot_corruption_heatmap(summary, tmp_path / "heat.png"))
    fig = ef._heatmap_figure(summary, eval_set="val")
    ax = fig.axes[0]
    (image,) = [im for im in ax.get_images() if im.get_gid() == "top1_heatmap"]
    grid = np.ma.filled(image.get_array(), np.nan)
    assert grid.shape == (19, 6)
    assert [t.get_text() for t in ax.get_yticklabels()] == CORRUPTIONS_19
    val = summary[summary["set"] == "val"].set_index(["corruption", "severity"])["top1_acc"] * 100
    for i, name in enumerate(CORRUPTIONS_19):
        assert grid[i, 0] == pytest.approx(val["none", 0])
        for severity in range(1, 6):
            assert grid[i, severity] == pytest.approx(val[name, severity])
    assert len(ax.texts) == 19 * 6


def test_heatmap_leaves_conditions_not_run_empty() -> None:
    summary = _summary(["fog", "contrast"], (1, 3))
    summary = summary[~((summary["corruption"] == "fog") & (summary["severity"] == 3))]
    names, severities, grid = ef.heatmap_grid(summary)
    assert names == ["fog", "contrast"] and severities == [0, 1, 3]
    assert np.isnan(grid[0, 2]) and np.isfinite(grid[1]).all()


def test_training_png_and_edge_cases(tmp_path: Path) -> None:
    _check_png(ef.plot_training_curves(_training_log(1), tmp_path / "one.png"))
    log = _training_log(40)
    log.loc[3, "val_loss"] = np.nan
    _check_png(ef.plot_training_curves(log, str(tmp_path / "nan.png")))


def test_corruption_curves_plot_the_summary() -> None:
    summary = _summary(["contrast", "brightness"]).iloc[::-1]  # order of rows must not matter
    fig = ef._corruption_figure(summary, "contrast", judge="PIQE", eval_set="val")
    want = _summary(["contrast", "brightness"])
    want = want[(want["set"] == "val") & want["corruption"].isin(["none", "contrast"])].sort_values(
        "severity"
    )
    axes = fig.axes
    assert len(axes) == 3
    for ax, (point, _, _, scale, _) in zip(axes, ef.PANELS, strict=True):
        line = _line(ax, f"{point}:contrast")
        np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), want[point].to_numpy() * scale)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0 (clean)", "1", "2", "3"]
    assert axes[0].get_ylabel() == "Top-1 accuracy (%)"
    assert axes[0].get_ylim() == (-2, 102)
    assert axes[2].get_ylabel() == "mean quality (PIQE, 0-100)"
    assert "contrast" in fig._suptitle.get_text() and "n = 100" in fig._suptitle.get_text()


def test_error_bars_span_the_interval() -> None:
    summary = _summary(["contrast"], severities=(1,))
    fig = ef._corruption_figure(summary, "contrast", judge="", eval_set="val")
    val = summary[summary["set"] == "val"].sort_values("severity")
    segments = fig.axes[0].collections[0].get_segments()
    lows = [seg[:, 1].min() for seg in segments]
    highs = [seg[:, 1].max() for seg in segments]
    np.testing.assert_allclose(lows, val["top1_lo"] * 100)
    np.testing.assert_allclose(highs, val["top1_hi"] * 100)
    assert fig.axes[2].get_ylabel() == "mean quality (0-100)"


def test_other_set_is_selected() -> None:
    summary = _summary(["contrast"])
    fig = ef._corruption_figure(summary, "contrast", judge="", eval_set="test")
    want = summary[(summary["set"] == "test")].sort_values("severity")
    np.testing.assert_allclose(_line(fig.axes[0], "top1_acc:contrast").get_ydata(), want["top1_acc"] * 100)


def test_overview_has_one_line_per_corruption_sharing_clean() -> None:
    summary = _summary(CORRUPTIONS_19)
    fig = ef._overview_figure(summary, judge="PaQ-2-PiQ", eval_set="val")
    val = summary[summary["set"] == "val"]
    clean = val[val["corruption"] == "none"]
    for ax, (point, _, _, scale, _) in zip(fig.axes, ef.PANELS, strict=True):
        styles = set()
        for name in CORRUPTIONS_19:
            line = _line(ax, f"{point}:{name}")
            rows = pd.concat([clean, val[val["corruption"] == name]])
            np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 3])
            np.testing.assert_allclose(line.get_ydata(), rows[point].to_numpy() * scale)
            assert to_hex(line.get_color()).upper() in OKABE_ITO  # the colour-blind-safe palette only
            styles.add((to_hex(line.get_color()), line.get_marker()))
        assert len(styles) == 19  # every corruption has its own colour and marker
        np.testing.assert_allclose(_line(ax, f"{point}:none").get_ydata(), clean[point] * scale)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["clean", *CORRUPTIONS_19]
    assert fig.axes[2].get_ylabel() == "mean quality (PaQ-2-PiQ, 0-100)"


def test_overview_clean_only_shows_the_clean_point() -> None:
    fig = ef._overview_figure(_summary([]), judge="", eval_set="val")
    for ax in fig.axes:
        gids = [line.get_gid() for line in ax.get_lines() if line.get_gid()]
        assert len(gids) == 1 and gids[0].endswith(":none")
        assert list(_line(ax, gids[0]).get_xdata()) == [0]


def test_dollar_names_are_plain_text() -> None:
    summary = _summary(["a$b_c", "$x$"])
    fig = ef._overview_figure(summary, judge="J$", eval_set="val")
    texts = [t for t in fig.legends[0].get_texts()]
    assert [t.get_text() for t in texts] == ["clean", r"a\$b_c", r"\$x\$"]
    for text in [*texts, fig.axes[2].yaxis.label]:
        # matplotlib's own test of whether a string would be parsed as mathtext
        _, is_math = text._preprocess_math(text.get_text())
        assert not is_math
    fig2 = ef._corruption_figure(summary, "$x$", judge="", eval_set="val")
    title = fig2._suptitle
    assert title._preprocess_math(title.get_text()) == (
        "$x$ on val (n = 100, 95% bootstrap intervals)",
        False,
    )


def test_training_curves_plot_the_log() -> None:
    log = _training_log(6).sample(frac=1.0, random_state=0)  # epochs out of order
    fig = ef._training_figure(log)
    loss_ax, acc_ax = fig.axes
    ordered = log.sort_values("epoch")
    for column in ("train_loss", "val_loss"):
        line = _line(loss_ax, column)
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 7))
        np.testing.assert_allclose(line.get_ydata(), ordered[column])
    for column in ("train_acc", "val_top1", "val_top5"):
        np.testing.assert_allclose(_line(acc_ax, column).get_ydata(), ordered[column] * 100)


def test_training_loss_spanning_orders_of_magnitude_is_drawn_on_a_log_axis() -> None:
    log = _training_log(4)
    assert ef._training_figure(log).axes[0].get_yscale() == "linear"
    log.loc[0, "val_loss"] = 4e6  # a first epoch from scratch, BatchNorm statistics not yet settled
    assert ef._training_figure(log).axes[0].get_yscale() == "log"
