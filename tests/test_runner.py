"""The stage contract: declared stages, one runner, and a runner that verifies before it trusts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import assert_same_run

from saliqa.cli import main
from saliqa.config import RunConfig, config_from_dict, runtime_settings
from saliqa.iqa.base import QualityOutput
from saliqa.iqa.piqe import PIQE
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.run import STAGE_NAMES, run_pipeline, stage_states
from saliqa.pipeline.rundir import RunDir
from saliqa.pipeline.shards import FailureGuard, Item, _judge_isolating
from saliqa.pipeline.stages import STAGES

SRC = Path(__file__).resolve().parents[1] / "src"


def _config(root: Path, **sections: dict) -> RunConfig:
    values: dict = {
        "data": {"source": "folder", "root": str(root)},
        "rate": {"device": "cpu", "workers": 0},
        "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.34},
        "train": {"epochs": 1, "batch_size": 4, "image_size": 64, "workers": 0, "device": "cpu"},
        "evaluate": {"crop": 64, "workers": 0, "device": "cpu", "bootstrap": 100, "severities": [1]},
    }
    for name, settings in sections.items():
        values[name] = {**values.get(name, {}), **settings}
    return config_from_dict(values)


def _toml(path: Path, root: Path, rate: str = "", epochs: int = 1) -> Path:
    path.write_text(
        f'[data]\nsource = "folder"\nroot = "{root}"\n[rate]\ndevice = "cpu"\nworkers = 0\n{rate}'
        '[split]\nkeep = ["Bad", "Poor", "Fair", "Good", "Excellent"]\nval_fraction = 0.34\n'
        f'[train]\nepochs = {epochs}\nbatch_size = 4\nimage_size = 64\nworkers = 0\ndevice = "cpu"\n'
    )
    return path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "saliqa", *args]


ENV = {**os.environ, "PYTHONPATH": str(SRC)}


def _saliqa(*args: str, limit_kib: int | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """``saliqa ARGS`` in a fresh process (optionally under ``ulimit -f``), output captured."""
    command = _command(*args)
    if limit_kib is not None:
        command = ["bash", "-c", f'ulimit -f {limit_kib}; exec "$@"', "saliqa", *command]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, check=check)


# -- the declaration ---------------------------------------------------------------------------------------------
def test_the_stage_list_is_the_one_declaration_of_order_and_choices() -> None:
    assert (
        STAGE_NAMES
        == tuple(s.name for s in STAGES)
        == ("rate", "split", "train", "evaluate", "explain", "report")
    )
    config = RunConfig()
    written = {name: stage.name for stage in STAGES for name in stage.writes(config)}
    for i, stage in enumerate(STAGES):  # a stage reads only what an earlier stage writes
        assert all(written[name] in STAGE_NAMES[:i] for name in stage.reads), stage.name
    with pytest.raises(
        Exception,
        match="unknown stage 'publish'; choose one of rate, split, train, evaluate, explain, report",
    ):
        run_pipeline(config, "/nonexistent/never/made", until="publish", progress=False)


def test_settings_that_change_no_number_are_declared_once() -> None:
    from saliqa.config import EvaluateConfig, ExplainConfig, RateConfig, TrainConfig

    assert runtime_settings(RateConfig) == ("device", "batch_size", "shard_size", "workers")
    assert runtime_settings(TrainConfig) == ("device", "workers", "trust_checkpoint")
    assert runtime_settings(EvaluateConfig) == ("shard_size", "workers", "device", "precision")
    assert runtime_settings(ExplainConfig) == ("shard_size", "workers", "device")


def test_readme_stage_table_is_generated_from_the_declaration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stages", "--markdown"]) == 0
    table = capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- stages: begin -->\n", "<!-- stages: end -->"
    assert readme[readme.index(begin) + len(begin) : readme.index(end)] == table


# -- one shard loop ----------------------------------------------------------------------------------------------
class _Work:
    """A stand-in per-image work whose judge fails on any batch that holds a bad image."""

    failure = "model failed"

    def __init__(self, bad: set[int], error: str = "out of memory") -> None:
        self.bad, self.error, self.calls = bad, error, 0

    def judge(self, items: list[Item]) -> None:
        self.calls += 1
        if any(item.position in self.bad for item in items):
            raise RuntimeError(self.error)


def test_a_failing_batch_is_bisected_to_its_bad_image() -> None:
    work = _Work(bad={5})
    items = [Item(i, {}) for i in range(16)]
    _judge_isolating(work, items)
    assert [i.status for i in items] == ["ok"] * 5 + ["failed"] + ["ok"] * 10
    assert items[5].reason == "model failed: RuntimeError: out of memory"
    assert work.calls == 1 + 2 * 4  # log2(16) halvings, not 16 retries one by one


def test_one_bad_image_is_recorded_but_the_same_error_everywhere_stops() -> None:
    guard = FailureGuard("rate")
    one_bad = [Item(0, {}), Item(1, {}, status="failed", error="ValueError: odd")]
    guard.shard(0, one_bad)  # a bad image: recorded, not fatal
    guard.shard(1, [Item(0, {}, status="missing")])  # nothing tried: says nothing
    with pytest.raises(Exception, match="the same error ended all 2 images it tried.*RuntimeError: boom"):
        guard.shard(2, [Item(i, {}, status="failed", error="RuntimeError: boom") for i in range(2)])
    single = FailureGuard("rate", streak=4)  # shards of one image: a run of the same error stops it too
    for index in range(3):
        single.shard(index, [Item(0, {}, status="failed", error="RuntimeError: boom")])
    with pytest.raises(Exception, match="all 4 images"):
        single.shard(3, [Item(0, {}, status="failed", error="RuntimeError: boom")])
    ended = FailureGuard("rate")
    ended.shard(0, [Item(0, {}, status="failed", error="E: x")])
    ended.shard(1, [Item(0, {}, status="failed", error="E: x")])
    with pytest.raises(Exception, match="all 2 images"):
        ended.finish()


class _Broken(PIQE):
    def rate(self, images: torch.Tensor) -> QualityOutput:
        raise RuntimeError("boom: a bug in the quality model")


@pytest.mark.parametrize("shard_size", [256, 1])
def test_a_model_that_always_raises_fails_the_stage_and_marks_nothing_done(
    folder_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    shard_size: int,
) -> None:
    monkeypatch.setattr(
        "saliqa.pipeline.models.load_quality_model", lambda name, device, files: _Broken("cpu")
    )
    config = _toml(tmp_path / "run.toml", folder_dataset, rate=f"shard_size = {shard_size}\n")
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out), "--until", "split", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saliqa: error: rate (piqe): the same error ended all")
    assert err[0].count("boom: a bug in the quality model") == 1
    assert not (out / RunLayout.stage_record("rate")).exists() and not (out / RunLayout.RATINGS).exists()
    assert not list((out / RunLayout.RATINGS_PARTS).glob("part-*"))  # no table of failures kept for a resume
    monkeypatch.undo()
    assert [r.ran for r in run_pipeline(_config(folder_dataset), out, until="split", progress=False)] == [
        True,
        True,
    ]
    assert (pd.read_parquet(out / RunLayout.RATINGS)["status"] == "ok").all()


def test_saliqa_rate_stops_on_a_model_that_always_raises(
    folder_dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("saliqa.api.load_quality_model", lambda name, device: _Broken("cpu"))
    assert main(["rate", str(folder_dataset), "--device", "cpu", "-q"]) == 1
    assert "the same error ended all" in capsys.readouterr().err


# -- model specs -------------------------------------------------------------------------------------------------
def _checkpoint(tmp_path: Path) -> Path:
    from saliqa.classify.checkpoint import save_checkpoint
    from saliqa.classify.models import build_classifier

    classes = ["astronaut", "chelsea", "coffee"]
    return save_checkpoint(tmp_path / "model.pt", build_classifier("resnet18", 3, seed=0), classes=classes)


SUBPROCESS_ROWS = """
import pickle, sys
import pandas as pd
from saliqa.pipeline.evaluation import evaluate_records
from saliqa.pipeline.plan import Runtime
spec, plan, records = pickle.load(open(sys.argv[1], "rb"))
pd.DataFrame(evaluate_records(records, spec.build(), plan, Runtime(workers=0))).to_parquet(sys.argv[2])
"""


def test_a_pickled_spec_builds_the_same_judges_in_another_process(
    folder_dataset: Path, tmp_path: Path
) -> None:
    import pickle

    from saliqa.data.readers import read_folder
    from saliqa.pipeline.evaluation import evaluate_records
    from saliqa.pipeline.models import ClassifierSpec, JudgesSpec, QualitySpec
    from saliqa.pipeline.plan import CropPlan, Runtime, conditions

    spec = JudgesSpec(ClassifierSpec.of(_checkpoint(tmp_path), "cpu"), QualitySpec.find("piqe", "cpu"), 16)
    plan = CropPlan(conditions(("fog", "contrast"), (2,)), crop=64, seed=0)
    records = read_folder(folder_dataset).frame.assign(set="val").to_dict("records")[:4]
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps((spec, plan, records)))
    script = tmp_path / "rows.py"
    script.write_text(SUBPROCESS_ROWS)
    command = [sys.executable, str(script), str(tmp_path / "spec.pkl"), str(tmp_path / "rows.parquet")]
    subprocess.run(command, check=True, env=ENV)
    here = pd.DataFrame(evaluate_records(records, spec.build(), plan, Runtime(workers=0)))
    there = pd.read_parquet(tmp_path / "rows.parquet")
    exact = [c for c in here.columns if c != "prob_true"]
    pd.testing.assert_frame_equal(there[exact], here[exact], check_dtype=False, check_exact=True)
    pd.testing.assert_series_equal(there["prob_true"], here["prob_true"], rtol=1e-6)


def test_the_classifier_a_spec_builds_gives_gradients_to_an_attribution(tmp_path: Path) -> None:
    from saliqa.pipeline.models import ClassifierSpec

    classifier, _ = ClassifierSpec.of(_checkpoint(tmp_path), "cpu").build()
    assert not any(p.requires_grad for p in classifier.parameters())  # frozen, not in inference mode
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    classifier(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_spec_refuses_a_checkpoint_that_changed(tmp_path: Path) -> None:
    from saliqa.errors import CheckpointError
    from saliqa.pipeline.models import ClassifierSpec

    path = _checkpoint(tmp_path)
    spec = ClassifierSpec.of(path, "cpu")
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="changed since this run was planned"):
        spec.build()


# -- the runner verifies before it trusts ------------------------------------------------------------------------
def test_a_damaged_table_reruns_its_stage_and_says_why(folder_dataset: Path, tmp_path: Path) -> None:
    reference, out = tmp_path / "reference", tmp_path / "run"
    run_pipeline(_config(folder_dataset), reference, until="split", progress=False)
    run_pipeline(_config(folder_dataset), out, until="split", progress=False)
    ratings = out / RunLayout.RATINGS
    ratings.write_bytes(ratings.read_bytes()[: ratings.stat().st_size // 2])  # cut in half
    results = run_pipeline(_config(folder_dataset), out, until="split", progress=False)
    assert [r.ran for r in results] == [True, False]  # the same table again: split stays valid
    assert results[0].messages[0].startswith("ran again: ratings.parquet changed since it was made (size")
    assert_same_run(out, reference)


def test_a_deleted_map_shard_reruns_rate(folder_dataset: Path, tmp_path: Path) -> None:
    from saliqa.pipeline.mapstore import MapStore

    out = tmp_path / "run"
    run_pipeline(_config(folder_dataset, rate={"shard_size": 4}), out, until="rate", progress=False)
    (out / "quality_maps" / "part-00001.npz").unlink()
    results = run_pipeline(_config(folder_dataset, rate={"shard_size": 4}), out, until="rate", progress=False)
    assert results[0].ran and results[0].messages[0] == "ran again: quality_maps/part-00001.npz is missing"
    assert len(MapStore(out / "quality_maps")) == 12


def test_a_second_run_in_the_same_directory_fails_at_once_naming_the_holder(
    folder_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _toml(tmp_path / "run.toml", folder_dataset)
    out = tmp_path / "run"
    with RunDir(out).locked():  # another process's run, as far as the lock can tell
        assert main(["run", "--config", str(config), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"run directory {out} is in use by saliqa (pid {os.getpid()}" in err
    assert not (out / RunLayout.RATINGS).exists()
    assert main(["run", "--config", str(config), "--out", str(out), "--until", "rate", "-q"]) == 0


def test_a_concurrent_run_fails_instead_of_racing(folder_dataset: Path, tmp_path: Path) -> None:
    config = _toml(tmp_path / "run.toml", folder_dataset, epochs=60)  # long enough to be caught running
    out = tmp_path / "run"
    run = ("run", "--config", str(config), "--out", str(out), "--until", "train", "-q")
    first = subprocess.Popen(_command(*run), env=ENV, stderr=subprocess.PIPE, text=True)
    lock = out / RunLayout.LOCK
    for _ in range(600):  # until the first run holds the directory
        if lock.exists() and lock.read_text().startswith("saliqa (pid"):
            break
        subprocess.run(["sleep", "0.05"], check=True)
    second = _saliqa(*run)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert second.returncode == 1
    assert f"is in use by saliqa (pid {first.pid}" in second.stderr and len(second.stderr.splitlines()) == 1


def test_a_full_disk_ends_in_one_line_and_the_run_resumes(folder_dataset: Path, tmp_path: Path) -> None:
    config = _toml(tmp_path / "run.toml", folder_dataset)
    reference, out = tmp_path / "reference", tmp_path / "run"
    assert (
        _saliqa("run", "--config", str(config), "--out", str(reference), "--until", "train", "-q").returncode
        == 0
    )
    # A figure is larger than 20 KiB: the limit stops rate while it writes one.
    small = _saliqa("run", "--config", str(config), "--out", str(out), "--until", "split", "-q", limit_kib=20)
    assert small.returncode == 1 and len(small.stderr.splitlines()) == 1, small.stderr
    assert small.stderr.startswith("saliqa: error: cannot write ") and "File too large" in small.stderr
    assert "run the same command again to resume" in small.stderr
    # The checkpoint (45 MB) does not fit in 2 MiB: torch's write failure becomes the same one line.
    big = _saliqa("run", "--config", str(config), "--out", str(out), "--until", "train", "-q", limit_kib=2048)
    assert big.returncode == 1 and len(big.stderr.splitlines()) == 1, big.stderr
    assert "cannot write " in big.stderr and ("last.pt" in big.stderr or "best.pt" in big.stderr)
    assert (
        _saliqa("run", "--config", str(config), "--out", str(out), "--until", "train", "-q").returncode == 0
    )
    assert_same_run(out, reference)
    for name in ("rate", "split", "train"):
        record = json.loads((out / RunLayout.stage_record(name)).read_text())
        assert record["files"] and all(size > 0 for size, _ in record["files"].values())


def test_a_copied_or_moved_run_directory_is_still_up_to_date(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _config(folder_dataset)
    run_pipeline(config, out, until="train", progress=False)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)  # new files, new modification times
    assert [r.ran for r in run_pipeline(config, copy, until="train", progress=False)] == [False] * 3
    moved = tmp_path / "moved"
    copy.rename(moved)
    assert [r.ran for r in run_pipeline(config, moved, until="train", progress=False)] == [False] * 3


def test_the_demo_inside_a_copied_run_is_recognised_by_its_content(tmp_path: Path) -> None:
    config = config_from_dict({"data": {"demo_views_per_class": 2}, "rate": {"device": "cpu", "workers": 0}})
    run_pipeline(config, tmp_path / "run", until="rate", progress=False)
    subprocess.run(["cp", "-r", str(tmp_path / "run"), str(tmp_path / "copy")], check=True)
    assert not run_pipeline(config, tmp_path / "copy", until="rate", progress=False)[0].ran


# -- the shape is visible ----------------------------------------------------------------------------------------
def test_stages_shows_each_stage_and_whether_it_is_up_to_date(
    folder_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _toml(tmp_path / "run.toml", folder_dataset)
    out = tmp_path / "run"
    assert [s.state for s in stage_states(_config(folder_dataset), out)] == [
        "will run",
        *["will run after rate"] * 3,
        "will run after split",
        "will run after rate",
    ]
    assert not out.exists()  # looking changes nothing
    assert main(["run", "--config", str(config), "--out", str(out), "--until", "split", "-q"]) == 0
    capsys.readouterr()
    assert main(["stages", "--config", str(config), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rate: up to date\n" in text and "split: up to date\n" in text
    assert "train: will run (not run here yet)\n" in text and "evaluate: will run after train\n" in text
    assert "  writes: split.parquet\n" in text and "  reads:  ratings.parquet\n" in text
    config.write_text(config.read_text().replace("val_fraction = 0.34", "val_fraction = 0.5"))
    assert main(["stages", "--config", str(config), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "split: will run (changed settings: split.val_fraction)\n" in text


def test_progress_is_plain_lines_in_a_log(folder_dataset: Path, tmp_path: Path) -> None:
    config = _toml(tmp_path / "run.toml", folder_dataset, rate="batch_size = 1\n")
    done = _saliqa(
        "run", "--config", str(config), "--out", str(tmp_path / "run"), "--until", "train", check=True
    )
    lines = done.stdout.splitlines()  # stdout is a pipe here, as it is a file in `saliqa run > log`
    tenths = [line for line in lines if line.startswith("rate (piqe): ")]
    assert [line.split()[2] for line in tenths] == [f"{10 * k}%" for k in range(1, 11)]
    assert any(line.startswith("train (p2p-resnet18): epoch 1/1: train loss ") for line in lines)
    assert "rate: done in" in done.stdout and "train: done in" in done.stdout
    assert done.stderr == ""


def test_loader_workers_persist_across_shards_and_epochs(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saliqa.pipeline import crops

    pids = tmp_path / "pids"

    class Recording(crops.CropsDataset):
        def __getitem__(self, position: int) -> crops.Prepared:
            with open(pids, "a") as f:
                f.write(f"{os.getpid()}\n")
            return super().__getitem__(position)

    monkeypatch.setattr("saliqa.pipeline.evaluation.CropsDataset", Recording)
    config = _config(folder_dataset, evaluate={"workers": 2, "shard_size": 1})
    run_pipeline(config, tmp_path / "run", progress=False)
    calls = pids.read_text().split()
    # New workers per shard would show a new process id each time; the same (at most two) serve them all.
    assert len(calls) >= 3 and len(set(calls)) <= 2 and str(os.getpid()) not in calls

    from saliqa.classify import train

    class RecordingImages(train._Images):
        def __getitem__(self, key: tuple[str, int, int]) -> tuple:
            with open(tmp_path / "train_pids", "a") as f:
                f.write(f"{os.getpid()}\n")
            return super().__getitem__(key)

    monkeypatch.setattr("saliqa.classify.train._Images", RecordingImages)
    config = _config(folder_dataset, train={"workers": 2, "epochs": 3})
    run_pipeline(config, tmp_path / "run", until="train", progress=False)
    calls = (tmp_path / "train_pids").read_text().split()  # three epochs and their validations
    assert len(calls) >= 3 * 12 and len(set(calls)) == 2 and str(os.getpid()) not in calls


def test_readme_lists_the_columns_the_schemas_declare() -> None:
    import re

    from saliqa.pipeline.tables import COMPARE, COMPARE_SUMMARY, EVAL, MAPS_INDEX, RATINGS, SANITY, STATS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for schema in (RATINGS, EVAL, MAPS_INDEX, COMPARE, COMPARE_SUMMARY, SANITY, STATS):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{schema.name}` |"))
        cell = row.split("|")[3]
        listed = [c.strip() for span in re.findall(r"`([^`]*)`", cell) for c in span.split(",")]
        assert tuple(listed) == schema.columns, schema.name
