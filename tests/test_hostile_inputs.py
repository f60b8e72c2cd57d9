"""Hostile inputs, tried as a user would: each ends in a recorded row or one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saliqa.cli import main


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("saliqa: error: "), err
    return err


def test_a_missing_dataset_root_names_its_config_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nsource = "folder"\nroot = "{tmp_path / "nowhere"}"\n')
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "data.root: Dataset folder" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()
    config.write_text(
        f'[[evaluate.extra_sets]]\nname = "test"\nsource = "folder"\nroot = "{tmp_path / "gone"}"\n'
    )
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "evaluate.extra_sets[0].root: Dataset folder" in _one_error_line(capsys)


def test_a_newline_in_a_file_name_keeps_rate_to_one_line_per_image(
    folder_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coffee = folder_dataset / "coffee"
    (coffee / "coffee_0.png").rename(coffee / "two\nlines.png")
    assert main(["rate", str(coffee), "--device", "cpu", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and any(line.startswith(f"{coffee}/two\\nlines.png\tok\t") for line in lines)


class _Payload:
    """Unpickling this would create a marker file: proof that code from the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_malicious_pickle_as_initial_weights_is_refused_in_one_line_naming_the_opt_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "hook": _Payload(marker)}, tmp_path / "evil.pth")
    config = tmp_path / "run.toml"
    config.write_text(f'[train]\npretrained = "{tmp_path / "evil.pth"}"\n')
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = _one_error_line(capsys)
    assert "saliqa refuses" in err and "would run code (getattr)" in err
    assert "--trust-checkpoint" in err and "weights_only` set to `False`" not in err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_plain_pickle_as_initial_weights_prints_no_torch_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"conv1.weight": torch.zeros(1)}, protocol=4))
    config = tmp_path / "run.toml"
    config.write_text(f'[train]\npretrained = "{tmp_path / "plain.pkl"}"\n')
    with _no_warnings():
        assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = _one_error_line(capsys)
    assert "cannot be read as a torch weights file" in err and "torch.save(model.state_dict(), path)" in err


class _no_warnings:
    """Fails when a warning is issued inside the block."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)
        assert not self._seen, [str(w.message) for w in self._seen]
