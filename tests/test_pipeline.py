from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_run, make_folder_dataset

from saliqa.config import config_from_dict
from saliqa.images import read_image, to_batch
from saliqa.io.tables import read_provenance
from saliqa.iqa.piqe import piqe
from saliqa.pipeline.mapstore import MapStore
from saliqa.pipeline.run import run_pipeline
from saliqa.pipeline.tables import EVAL, RATINGS


def _config(root: Path, **rate: object) -> object:
    return config_from_dict(
        {
            "data": {"source": "folder", "root": str(root)},
            "rate": {"device": "cpu", **rate},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"]},
        }
    )


def _add_bad_files(root: Path) -> None:
    (root / "chelsea" / "empty.jpg").write_bytes(b"")
    (root / "chelsea" / "notes.png").write_text("not an image")
    (root / "coffee" / "tiny.png").write_bytes((root / "coffee" / "coffee_0.png").read_bytes())
    from PIL import Image

    Image.new("RGB", (8, 8)).save(root / "coffee" / "tiny.png")


def test_run_writes_every_artifact_and_records_bad_images(folder_dataset: Path, tmp_path: Path) -> None:
    _add_bad_files(folder_dataset)
    out = tmp_path / "run"
    results = run_pipeline(_config(folder_dataset, shard_size=5), out, until="split", progress=False)
    assert [r.name for r in results] == ["rate", "split"] and all(r.ran for r in results)

    ratings = pd.read_parquet(out / "ratings.parquet")
    assert tuple(ratings.columns) == RATINGS.columns
    assert len(ratings) == 15 and ratings["image_id"].is_monotonic_increasing
    status = ratings.set_index("image_id")["status"]
    reason = ratings.set_index("image_id")["reason"]
    assert status["chelsea/empty.jpg"] == "rejected" and reason["chelsea/empty.jpg"] == "empty file"
    assert status["chelsea/notes.png"] == "rejected" and reason["chelsea/notes.png"] == "not an image"
    assert status["coffee/tiny.png"] == "rejected" and reason["coffee/tiny.png"].startswith("too small")
    ok = ratings[ratings["status"] == "ok"]
    assert len(ok) == 12 and ok["category"].notna().all() and (ok["iqa"] == "piqe").all()
    np.testing.assert_allclose(ok["quality"], 100 - ok["score"])

    # The stored score and map are the model's own, on the decoded file.
    store = MapStore(out / "quality_maps")
    assert sorted(store.ids()) == sorted(ok["image_id"])
    first = ok.iloc[0]
    direct = piqe(to_batch([read_image(first["path"])]))
    assert first["score"] == pytest.approx(float(direct.score[0]), abs=1e-12)
    values, grid = store.get(first["image_id"])
    assert grid.shape == values.shape == direct.activity.shape[1:]

    split = pd.read_parquet(out / "split.parquet")
    assert set(split["split"]) <= {"train", "val", "excluded"}
    assert len(split) == len(ratings)
    for name in ("figures/quality_histogram.png", "figures/category_counts.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = read_provenance(out / "ratings.parquet")
    assert meta["stage"] == "rate" and meta["config"]["iqa"] == "piqe" and "torch" in meta["versions"]
    assert (out / "config.toml").exists() and (out / "stages" / "rate.json").exists()
    assert not (out / "ratings.parts").exists()


def test_second_run_does_no_work_and_one_setting_reruns_only_its_stage(
    folder_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run_pipeline(_config(folder_dataset), out, until="split", progress=False)
    stamp = (out / "ratings.parquet").stat().st_mtime_ns
    again = run_pipeline(_config(folder_dataset, batch_size=3, workers=0), out, until="split", progress=False)
    assert [r.ran for r in again] == [False, False]
    assert (out / "ratings.parquet").stat().st_mtime_ns == stamp

    changed = config_from_dict(
        {
            "data": {"source": "folder", "root": str(folder_dataset)},
            "rate": {"device": "cpu"},
            "seed": 5,
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"]},
        }
    )
    third = run_pipeline(changed, out, until="split", progress=False)
    assert [r.ran for r in third] == [False, True]

    (folder_dataset / "astronaut" / "astronaut_0.png").unlink()
    fourth = run_pipeline(changed, out, until="split", progress=False)
    assert [r.ran for r in fourth] == [True, True]
    assert len(pd.read_parquet(out / "ratings.parquet")) == 11


def test_batching_and_workers_do_not_change_ratings(folder_dataset: Path, tmp_path: Path) -> None:
    a = run_pipeline(
        _config(folder_dataset, batch_size=1, workers=0, shard_size=1),
        tmp_path / "a",
        until="split",
        progress=False,
    )
    b = run_pipeline(
        _config(folder_dataset, batch_size=8, workers=3, shard_size=100),
        tmp_path / "b",
        until="split",
        progress=False,
    )
    assert a[0].fingerprint == b[0].fingerprint
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "ratings.parquet"),
        pd.read_parquet(tmp_path / "b" / "ratings.parquet"),
        check_exact=True,
    )


def _run_command(config: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "saliqa",
        "run",
        "--config",
        str(config),
        "--out",
        str(out),
        "--until",
        "split",
        "-q",
    ]


def test_sigkill_during_rate_resumes_to_identical_ratings(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "dataset", per_class=16, side=512)
    config = tmp_path / "run.toml"
    config.write_text(
        f'[data]\nsource = "folder"\nroot = "{root}"\n[rate]\ndevice = "cpu"\nshard_size = 1\nworkers = 0\n'
        '[split]\nkeep = ["Bad", "Poor", "Fair", "Good", "Excellent"]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}

    reference = tmp_path / "reference"
    subprocess.run(_run_command(config, reference), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    process = subprocess.Popen(_run_command(config, out), env=env, stderr=subprocess.DEVNULL)
    parts = out / "ratings.parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.parquet"))) < 5:
        assert process.poll() is None, "the run ended before it could be killed; give it more work"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "stages" / "rate.json").exists(), "killed too late: rate had already finished"
    done_before = len(list(parts.glob("part-*.parquet")))
    assert 5 <= done_before < 48

    subprocess.run(_run_command(config, out), check=True, env=env, capture_output=True)
    record = json.loads((out / "stages" / "rate.json").read_text())
    assert record["shards_reused"] >= 5
    assert_same_run(out, reference)


def test_mit67_listed_but_absent_files_are_recorded_not_fatal(shared_data: Path, tmp_path: Path) -> None:
    config = config_from_dict(
        {
            "data": {"source": "mit67", "root": str(shared_data / "mit67")},
            "rate": {"device": "cpu"},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"]},
        }
    )
    results = run_pipeline(config, tmp_path / "run", until="split", progress=False)
    ratings = pd.read_parquet(tmp_path / "run" / "ratings.parquet")
    counts = ratings["status"].value_counts().to_dict()
    assert counts == {"missing": 6689, "ok": 20}
    assert (ratings.loc[ratings["status"] == "missing", "reason"] == "file not found").all()
    assert any("TestImages.txt are missing" in m for m in results[0].messages)
    split = pd.read_parquet(tmp_path / "run" / "split.parquet")
    assert (split["split"] != "excluded").sum() == 20


def test_scene15_grey_photos_rate_and_split_with_the_defaults(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "scene15_indoor" / "train"
    config = config_from_dict({"data": {"source": "folder", "root": str(root)}, "rate": {"device": "cpu"}})
    results = run_pipeline(config, tmp_path / "run", until="split", progress=False)
    ratings = pd.read_parquet(tmp_path / "run" / "ratings.parquet")
    assert len(ratings) == 600 and (ratings["status"] == "ok").all()  # grey JPEGs decode as RGB
    assert ratings.groupby("label").size().to_dict() == dict.fromkeys(
        ["bedroom", "industrial", "kitchen", "livingroom", "office", "store"], 100
    )
    split = pd.read_parquet(tmp_path / "run" / "split.parquet").merge(ratings, on="image_id")
    kept = split[split["split"] != "excluded"]
    assert set(kept["category"]) <= {"Good", "Excellent"}
    for label, group in kept.groupby("label"):  # each kept class is split about 80/20
        n = len(group)
        assert (group["split"] == "val").sum() == min(n - 1, max(1, int(n * 0.2 + 0.5))), label
    too_small = set(ratings["label"]) - set(kept["label"])
    assert all(any(f"'{label}'" in m for m in results[1].messages) for label in too_small)


def _full_config(root: Path, extra: Path | None = None, **evaluate: object) -> object:
    values = {
        "data": {"source": "folder", "root": str(root)},
        "rate": {"device": "cpu"},
        "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.34},
        "train": {"epochs": 2, "batch_size": 4, "image_size": 64, "workers": 0, "device": "cpu"},
        "evaluate": {"crop": 64, "workers": 0, "device": "cpu", "bootstrap": 200, **evaluate},
        "explain": {
            "sample": 4,
            "sanity_sample": 2,
            "bootstrap": 100,
            "panels": 2,
            "workers": 0,
            "device": "cpu",
        },
    }
    if extra is not None:
        values["evaluate"]["extra_sets"] = [{"name": "test", "source": "folder", "root": str(extra)}]
    return config_from_dict(values)


def test_full_run_trains_evaluates_and_reruns_only_what_changed(tmp_path: Path) -> None:
    from saliqa.stats import SUMMARY_COLUMNS

    root = make_folder_dataset(tmp_path / "dataset", per_class=6, side=96)
    extra = make_folder_dataset(tmp_path / "extra", per_class=2, side=80)  # under 224: fine at crop 64
    (extra / "coffee" / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    results = run_pipeline(_full_config(root, extra), out, progress=False)
    assert [r.name for r in results] == ["rate", "split", "train", "evaluate", "explain", "report"]
    assert all(r.ran for r in results)

    for name in (
        "model/best.pt",
        "model/last.pt",
        "model/train_log.parquet",
        "figures/training_curves.png",
        "figures/eval_overview.png",
        "figures/eval_overview_test.png",
        "figures/eval_heatmap.png",
        "figures/eval_heatmap_test.png",
        *(f"figures/eval_{c}.png" for c in ("brightness", "contrast", "saturate", "jpeg_compression")),
    ):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_parquet(out / "eval.parquet")
    assert tuple(table.columns) == EVAL.columns
    split = pd.read_parquet(out / "split.parquet")
    n_val = int((split["split"] == "val").sum())
    assert len(table) == (n_val + 7) * 9  # validation images and the extra set, each under 9 conditions
    assert set(table["set"]) == {"val", "test"}
    broken = table[table["image_id"] == "coffee/broken.png"]
    assert (broken["status"] == "rejected").all() and len(broken) == 9
    summary = pd.read_parquet(out / "summary.parquet")
    assert tuple(summary.columns) == SUMMARY_COLUMNS and len(summary) == 2 * 9
    clean = summary[(summary["set"] == "val") & (summary["corruption"] == "none")].iloc[0]
    ok = table[(table["set"] == "val") & (table["corruption"] == "none") & (table["status"] == "ok")]
    assert clean["n"] == len(ok) == n_val
    assert clean["top1_acc"] == pytest.approx(ok["top1"].mean())
    assert clean["mean_quality"] == pytest.approx(ok["quality"].mean())
    assert read_provenance(out / "eval.parquet")["stage"] == "evaluate"
    assert not (out / "eval.parts").exists()

    index = pd.read_parquet(out / "maps" / "index.parquet")
    assert set(index["set"]) == {"val", "test"} and set(index["grid"]) == {"4x4"}  # PIQE's own, coarser grid

    again = run_pipeline(_full_config(root, extra), out, progress=False)
    assert [r.ran for r in again] == [False] * 6
    fewer = run_pipeline(_full_config(root, extra, severities=[3]), out, progress=False)
    assert [r.ran for r in fewer] == [False, False, False, True, True, True]
    assert set(pd.read_parquet(out / "eval.parquet")["severity"]) == {0, 3}


@pytest.mark.slow
def test_scene15_real_scenes_train_and_evaluate_above_chance(shared_data: Path, tmp_path: Path) -> None:
    """The whole pipeline on real indoor scenes: train folder rated, split and trained on; test folder evaluated.

    The photos are 200x200 grey, so PIQE rates most of them Fair or Poor: every category is kept. They are
    upscaled to 224 before the centre crop, and that is recorded.
    """
    from saliqa.stats import SUMMARY_COLUMNS

    scenes = shared_data / "scene15_indoor"
    config = config_from_dict(
        {
            "data": {"source": "folder", "root": str(scenes / "train")},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"]},
            "train": {"epochs": 10, "batch_size": 32, "lr": 0.1, "device": "cpu"},
            "evaluate": {"device": "cpu", "extra_sets": [{"name": "test", "root": str(scenes / "test")}]},
        }
    )
    out = tmp_path / "run"
    results = run_pipeline(config, out, progress=False)
    for result in results:
        print(result.name, f"{result.seconds:.0f} s", *result.messages, sep="\n  ")
    for name in (
        "ratings.parquet",
        "split.parquet",
        "model/best.pt",
        "model/train_log.parquet",
        "figures/training_curves.png",
        "figures/eval_overview.png",
        "figures/eval_overview_test.png",
        "figures/eval_heatmap.png",
        "figures/eval_heatmap_test.png",
        "figures/eval_contrast.png",
    ):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_parquet(out / "eval.parquet")
    assert tuple(table.columns) == EVAL.columns and (table["status"] == "ok").all()
    assert table["upscaled"].all()  # every scene15 photo is under 224 px on its short side
    assert len(table) == (120 + 956) * 9
    summary = pd.read_parquet(out / "summary.parquet").set_index(["set", "corruption", "severity"])
    assert tuple(summary.reset_index().columns) == SUMMARY_COLUMNS
    print(summary[["n", "top1_acc", "top1_lo", "top1_hi", "top5_acc", "mean_quality"]].to_string())
    chance = 1 / 6
    for eval_set in ("val", "test"):
        clean = summary.loc[(eval_set, "none", 0)]
        assert clean["top1_lo"] > chance, (eval_set, clean["top1_acc"])


def test_bootstrap_change_remakes_only_the_summary_and_a_foreign_checkpoint_is_refused(
    tmp_path: Path,
) -> None:
    import shutil

    from saliqa.errors import CheckpointError

    root = make_folder_dataset(tmp_path / "dataset", per_class=6, side=96)
    out = tmp_path / "run"
    run_pipeline(_full_config(root, severities=[1]), out, progress=False, until="evaluate")
    stamp = (out / "eval.parquet").stat().st_mtime_ns
    results = run_pipeline(
        _full_config(root, severities=[1], bootstrap=300), out, progress=False, until="evaluate"
    )
    assert [r.ran for r in results] == [False, False, False, True]
    assert any("only the summary" in m for m in results[-1].messages)
    assert (out / "eval.parquet").stat().st_mtime_ns == stamp
    assert not (out / "robustness.parquet").exists()

    # robustness references change robustness.parquet only; a run scored against itself has CE 1
    baseline = tmp_path / "baseline.parquet"
    shutil.copy(out / "eval.parquet", baseline)
    scored = _full_config(root, severities=[1], bootstrap=300, baseline=str(baseline), alexnet_reference=True)
    results = run_pipeline(scored, out, progress=False, until="evaluate")
    assert [r.ran for r in results] == [False, False, False, True]
    assert (out / "eval.parquet").stat().st_mtime_ns == stamp
    scores = pd.read_parquet(out / "robustness.parquet")
    mine = scores[scores["reference"] == "baseline"]
    assert set(mine["corruption"]) == {"brightness", "contrast", "saturate", "jpeg_compression", "mCE"}
    assert np.allclose(mine["ce"].dropna(), 1.0) and not mine["approximate"].any()
    assert scores[scores["reference"] == "alexnet"]["approximate"].all()
    assert read_provenance(out / "robustness.parquet")["baseline"] == str(baseline)
    assert not [m for m in results[-1].messages if m.startswith("baseline:")]  # same run: comparable
    from saliqa.errors import ConfigError

    with pytest.raises(ConfigError, match="evaluate.baseline: no eval table"):
        run_pipeline(
            _full_config(root, severities=[1], baseline=str(tmp_path / "nowhere")), out, progress=False
        )

    other = tmp_path / "other"
    run_pipeline(
        _full_config(root, severities=[1]).model_copy(update={"seed": 4}),
        other,
        until="train",
        progress=False,
    )
    shutil.copy(other / "model" / "best.pt", out / "model" / "best.pt")  # weights of another training
    with pytest.raises(CheckpointError, match="not made by this run's training"):
        run_pipeline(_full_config(root, severities=[1]), out, progress=False, until="evaluate")


def test_train_settings_that_change_no_weight_do_not_retrain(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "dataset", per_class=4, side=96)
    out = tmp_path / "run"
    base = _full_config(root)
    run_pipeline(base, out, until="train", progress=False)
    same = base.model_copy(
        update={"train": base.train.model_copy(update={"amp": False, "step_gamma": 0.5, "workers": 1})}
    )
    assert [r.ran for r in run_pipeline(same, out, until="train", progress=False)] == [False, False, False]
    other = base.model_copy(update={"train": base.train.model_copy(update={"lr": 0.02})})
    assert [r.ran for r in run_pipeline(other, out, until="train", progress=False)] == [False, False, True]


def test_a_baseline_that_is_not_comparable_is_reported() -> None:
    from saliqa.pipeline.stages.evaluate import baseline_differences

    ours = pd.DataFrame({"set": ["val", "val", "test"], "image_id": ["a", "b", "c"]})
    theirs = pd.DataFrame({"set": ["val"], "image_id": ["a"]})
    made = {"config": {"seed": 3, "evaluate": {"crop": 160}}}
    notes = baseline_differences(_full_config(Path("/data")), ours, theirs, made)
    assert notes == [
        "baseline: seed 3 (this run 0): its random corruptions differ",
        "baseline: crop 160 (this run 64)",
        "baseline: no set 'test'; it gets no CE",
        "baseline: set 'val' shares 1 of 2 images",
    ]
