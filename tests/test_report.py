"""The report: one self-contained page from the artifacts alone, escaped, checked in a real browser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_folder_dataset

from saliqa.cli import main
from saliqa.config import config_from_dict
from saliqa.pipeline.run import run_pipeline

HOSTILE = ["<svg onload=alert(1)>", '"><img src=x onerror=alert(2)>']
BOLD = "<b>bold"  # a file name cannot hold "/", so no closing tag
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole run on a dataset whose class and file names are markup."""
    tmp = tmp_path_factory.mktemp("report")
    root = make_folder_dataset(tmp / "plain", per_class=5, side=112)
    data = tmp / "dataset"
    data.mkdir()
    for name, source in zip([*HOSTILE, "coffee"], ["astronaut", "chelsea", "coffee"], strict=True):
        shutil.copytree(root / source, data / name)
    (data / HOSTILE[0] / f"{BOLD}.png").write_bytes(b"\x89PNG not really")  # listed as rejected, by name
    config = config_from_dict(
        {
            "data": {"source": "folder", "root": str(data)},
            "rate": {"device": "cpu", "workers": 0},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.4},
            "train": {"epochs": 1, "batch_size": 4, "image_size": 64, "workers": 0, "device": "cpu"},
            "evaluate": {
                "crop": 96,
                "corruptions": ["contrast"],
                "severities": [2],
                "workers": 0,
                "bootstrap": 100,
            },
            "explain": {"sample": 4, "sanity_sample": 2, "bootstrap": 100, "panels": 2, "workers": 0},
        }
    )
    out = tmp / "run"
    results = run_pipeline(config, out, progress=False)
    assert results[-1].name == "report" and results[-1].ran
    return out


def test_the_page_is_self_contained_and_escapes_every_name(hostile_run: Path) -> None:
    html = (hostile_run / "report.html").read_text(encoding="utf-8")
    for name in (*HOSTILE, BOLD):
        assert name not in html  # never as markup
    assert "&lt;svg onload=alert(1)&gt;" in html and "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert 'src="data:image/png;base64,' in html
    for section in ("Quality of the dataset", "The split", "Training", "Accuracy and quality under distortion",
                    "Attention against quality", "Reproduce"):  # fmt: skip
        assert section in html


def test_tables_get_csv_twins_and_markdown(hostile_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ratings", "split", "eval", "summary", "compare", "compare_summary", "sanity", "stats"):
        csv = pd.read_csv(hostile_run / f"{name}.csv", keep_default_na=False)
        assert len(csv) == len(pd.read_parquet(hostile_run / f"{name}.parquet")), name
    assert main(["report", str(hostile_run), "--format", "md"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {hostile_run / 'report.html'}"
    markdown = (hostile_run / "report.md").read_text(encoding="utf-8")
    assert "## Accuracy and quality under distortion: Per condition" in markdown


def test_a_partial_run_says_what_did_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=3, side=64)
    config = config_from_dict({"data": {"source": "folder", "root": str(root)}, "rate": {"workers": 0}})
    run_pipeline(config, tmp_path / "run", until="rate", progress=False)
    assert main(["report", str(tmp_path / "run")]) == 0
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "The explain stage has not run in this directory" in html and "--until explain" in html
    assert main(["report", str(tmp_path / "data")]) != 0
    assert "is not a saliqa run directory" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_in_a_real_browser_no_script_runs_and_every_figure_renders(hostile_run: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    dialogs, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto((hostile_run / "report.html").as_uri())
            sizes = page.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight])")
            text = page.inner_text("body")
            page.screenshot(path=str(hostile_run / "report.png"), full_page=True)
        finally:
            browser.close()
    assert dialogs == [] and errors == []
    assert len(sizes) >= 8 and all(w > 0 and h > 0 for w, h in sizes)
    for name in (*HOSTILE, BOLD):
        assert name in text  # shown as text
    assert (hostile_run / "report.png").stat().st_size > 0


def test_runs_side_by_side(hostile_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "second run"
    shutil.copytree(hostile_run, other)
    out = tmp_path / "both"
    assert main(["report", str(hostile_run), str(other), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'report.html'}"
    summary = pd.read_csv(out / "runs_summary.csv")
    assert set(summary["run"]) == {"run", "second run"}
    assert len(summary) == 2 * len(pd.read_parquet(hostile_run / "summary.parquet"))
    agreement = pd.read_csv(out / "runs_agreement.csv")
    assert set(agreement["run"]) == {"run", "second run"} and (agreement["n"] > 0).any()
    assert (out / "figures" / "runs_contrast.png").stat().st_size > 0
    assert (out / "figures" / "runs_contrast.svg").stat().st_size > 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "second run" in html and HOSTILE[0] not in html
    assert main(["report", str(hostile_run), str(other)]) != 0
    assert "needs --out" in capsys.readouterr().err


def test_every_figure_is_a_300_dpi_png_with_an_svg_twin(hostile_run: Path) -> None:
    from PIL import Image

    pngs = sorted((hostile_run / "figures").glob("*.png"))
    assert len(pngs) >= 10
    for png in pngs:
        with Image.open(png) as image:
            assert round(image.info["dpi"][0]) == 300, png.name
        svg = png.with_suffix(".svg").read_text(encoding="utf-8")
        assert svg.lstrip().startswith("<?xml") and "<script" not in svg, png.name
    recorded = json.loads((hostile_run / "stages" / "explain.json").read_text())["files"]
    assert "figures/explain_sanity.svg" in recorded  # the twins are part of what a stage made
