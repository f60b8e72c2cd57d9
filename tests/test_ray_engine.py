"""The Ray engine: the same tables as the local loop, row for row, and runs that resume across engines."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_same_run, make_folder_dataset
from test_rate import _config as rate_config
from test_rate import _interrupt

from saliqa.cli import main
from saliqa.config import config_from_dict, config_to_dict
from saliqa.errors import ConfigError
from saliqa.pipeline.run import run_pipeline, stage_states
from saliqa.pipeline.tables import COMPARE, COMPARE_SUMMARY, EVAL, MAPS_INDEX, RATINGS, STATS

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install 'saliqa[ray]'")
from saliqa.pipeline.engines.ray_data import ray_shards

PER_IMAGE = ("rate", "evaluate", "explain")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _config(root: Path, engine: str) -> object:
    return config_from_dict(
        {
            "data": {"source": "folder", "root": str(root)},
            "rate": {"device": "cpu", "workers": 0, "batch_size": 3, "shard_size": 4},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.5},
            "train": {"epochs": 1, "batch_size": 4, "image_size": 64, "workers": 0, "device": "cpu"},
            "evaluate": {
                "crop": 96,
                "corruptions": ["contrast", "gaussian_noise", "snow"],
                "severities": [1, 3],
                "workers": 0,
                "device": "cpu",
                "bootstrap": 100,
                "shard_size": 2,
            },
            "explain": {
                "methods": ["gradcam", "smoothgrad"],
                "options": {"smoothgrad": {"n_samples": 4}},
                "metrics": ["cc", "kld"],
                "sample": 4,
                "sanity": False,
                "panels": 1,
                "bootstrap": 100,
                "batch_size": 8,
                "workers": 0,
                "device": "cpu",
                "shard_size": 1,
            },
            "engine": {"kind": engine, "model_workers": 2, "prepare_batch": 2},
        }
    )


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def test_ray_makes_the_local_tables_row_for_row(
    tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    """Bit for bit when the classifier runs on as many threads on both engines (one here: the actors have one
    CPU each); with other counts its float32 outputs differ in their last bits, as they do between machines."""
    root = make_folder_dataset(tmp_path / "dataset", per_class=4, side=112)
    (root / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")  # one row rejected, either way
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    run_pipeline(_config(root, "local"), local, until="explain", progress=False)
    shutil.copytree(local, on_ray)
    for stage in PER_IMAGE:  # redo the per-image stages (and only them) on Ray
        (on_ray / "stages" / f"{stage}.json").unlink()
    for made in ("ratings.parquet", "eval.parquet", "maps/index.parquet"):
        (on_ray / made).unlink()  # evaluate would keep an eval.parquet of the same work
    on_ray_work = []

    def recorded(work: object, *args: object) -> object:
        on_ray_work.append(work.label)
        return ray_shards(work, *args)

    monkeypatch.setattr("saliqa.pipeline.engines.ray_data.ray_shards", recorded)
    results = run_pipeline(_config(root, "ray"), on_ray, until="explain", progress=False)
    ran = {r.name for r in results if r.ran}
    assert ran == set(PER_IMAGE), ran  # split and train stay up to date: the engine is in no fingerprint
    assert on_ray_work == ["rate (piqe)", "evaluate", "explain"]
    keys = ["set", "image_id", "corruption", "severity"]
    for name, schema, key in (
        ("ratings.parquet", RATINGS, ["image_id"]),
        ("eval.parquet", EVAL, keys),
        ("summary.parquet", None, None),
        ("maps/index.parquet", MAPS_INDEX, keys),
        ("compare.parquet", COMPARE, [*keys, "method", "reference", "metric"]),
        ("compare_summary.parquet", COMPARE_SUMMARY, None),
        ("stats.parquet", STATS, None),
    ):
        read = schema.read if schema is not None else pd.read_parquet
        theirs, ours = read(local / name), read(on_ray / name)
        if key is not None:
            theirs, ours = _sorted(theirs, key), _sorted(ours, key)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=name)
    assert (EVAL.read(on_ray / "eval.parquet")["status"] == "ok").all()
    ratings = RATINGS.read(on_ray / "ratings.parquet").set_index("image_id")
    assert ratings.loc["coffee/broken.jpg", "status"] == "rejected"
    assert_same_run(on_ray, local)  # ratings, split and patch maps bit for bit
    states = stage_states(_config(root, "ray"), local)
    assert all(s.state == "up to date" for s in states[: len(PER_IMAGE) + 2]), states


def test_a_run_killed_on_the_local_engine_resumes_on_ray(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_ray: None
) -> None:
    reference = tmp_path / "reference"
    run_pipeline(rate_config(folder_dataset, batch_size=1), reference, until="split", progress=False)
    out = tmp_path / "run"
    _interrupt(monkeypatch, rate_config(folder_dataset, batch_size=1, shard_size=1), out, stop_after=5)
    assert len(list((out / "ratings.parts").glob("part-*.parquet"))) == 5
    values = config_to_dict(rate_config(folder_dataset, batch_size=1, shard_size=1))
    values["engine"] = {"kind": "ray", "model_workers": 1}
    results = run_pipeline(config_from_dict(values), out, until="split", progress=False)
    rate = next(r for r in results if r.name == "rate")
    assert any("5 shard(s) reused" in m for m in rate.messages), rate.messages
    assert_same_run(out, reference)


def test_ray_engine_without_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    values = config_to_dict(rate_config(tmp_path))
    values["engine"] = {"kind": "ray"}
    with pytest.raises(ConfigError, match=r"pip install 'saliqa\[ray\]'"):
        run_pipeline(config_from_dict(values), tmp_path / "run", progress=False)
    assert main(["run", "--out", str(tmp_path / "cli"), "--engine", "ray", "-q"]) != 0
    error = capsys.readouterr().err
    assert "pip install 'saliqa[ray]'" in error and not (tmp_path / "cli" / "ratings.parquet").exists()
