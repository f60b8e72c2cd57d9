from __future__ import annotations

from pathlib import Path

import pytest

from saliqa.config import RunConfig, config_from_dict, dump_config, load_config
from saliqa.errors import ConfigError


def test_defaults_are_the_demo() -> None:
    config = load_config(None)
    assert config.data.source == "demo"
    assert config.rate.iqa == "piqe"
    assert config.split.keep == ("Good", "Excellent")
    assert config.split.val_fraction == 0.2


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    config = config_from_dict({"seed": 7, "split": {"keep": ["Excellent", "Fair"]}})
    path = tmp_path / "c.toml"
    path.write_text(dump_config(config))
    again = load_config(path)
    assert again == config
    assert again.split.keep == ("Fair", "Excellent")  # canonical worst-to-best order


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"rate": {"iqa": "brisqe"}}, "rate.iqa"),
        ({"rate": {"batchsize": 3}}, "rate.batchsize"),
        ({"split": {"val_fraction": 1.5}}, "split.val_fraction"),
        ({"split": {"keep": ["Good", "Great"]}}, "split.keep[1]"),
        ({"data": {"source": "folder"}}, "data"),
        ({"rate": {"device": "gpu"}}, "rate.device"),
        ({"sed": 1}, "sed"),
    ],
)
def test_errors_name_the_bad_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(values)
    assert f"{key}:" in str(info.value)


def test_relative_root_is_resolved_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "run.toml"
    path.write_text('[data]\nsource = "folder"\nroot = "../images"\n')
    assert load_config(path).data.root == (tmp_path / "images").resolve()


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_config_is_immutable() -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        RunConfig().seed = 3  # type: ignore[misc]
