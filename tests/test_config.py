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
        ({"train": {"arch": "vgg16"}}, "train.arch"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer"),
        ({"train": {"batch_size": 1}}, "train.batch_size"),
        ({"train": {"device": "tpu"}}, "train.device"),
        ({"evaluate": {"corruptions": ["brightnes"]}}, "evaluate.corruptions"),
        ({"evaluate": {"corruptions": "validation"}}, "evaluate.corruptions"),
        ({"evaluate": {"corruptions": ["blur", "zoom_blur"]}}, "evaluate.corruptions"),
        ({"evaluate": {"severities": [0, 2]}}, "evaluate.severities"),
        ({"evaluate": {"checkpoint": "first"}}, "evaluate.checkpoint"),
        ({"evaluate": {"extra_sets": [{"name": "val", "root": "/x"}]}}, "evaluate.extra_sets[0].name"),
        ({"evaluate": {"extra_sets": [{"name": "t"}]}}, "evaluate.extra_sets[0].root"),
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


def test_corruption_errors_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match="did you mean 'brightness'"):
        config_from_dict({"evaluate": {"corruptions": ["brightnes"]}})
    with pytest.raises(ConfigError, match="listed more than once"):
        config_from_dict({"evaluate": {"corruptions": ["noise", "shot_noise"]}})


def test_corruption_selections_expand_in_canonical_order() -> None:
    from saliqa.corrupt import corruption_names

    def names(value: object) -> tuple[str, ...]:
        return config_from_dict({"evaluate": {"corruptions": value}}).evaluate.corruptions

    assert names("all") == corruption_names("all") and len(names("all")) == 19
    assert names("common") == corruption_names("common") and len(names("common")) == 15
    assert names("extra") == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert names(["fog", "noise"]) == (
        "fog",
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "speckle_noise",
    )
    assert names("fog") == ("fog",)
    everything = config_from_dict({"evaluate": {"corruptions": "all", "severities": [1, 2, 3, 4, 5]}})
    assert len(everything.evaluate.corruptions) * len(everything.evaluate.severities) == 95


def test_the_defaults_are_the_reports_protocol() -> None:
    config = RunConfig()
    assert config.train.arch == "p2p-resnet18" and config.train.pretrained == "random"
    assert config.evaluate.corruptions == ("brightness", "contrast", "saturate", "jpeg_compression")
    assert config.evaluate.severities == (1, 2) and config.evaluate.crop == 224


def test_relative_paths_of_weights_and_extra_sets_are_resolved(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        '[train]\npretrained = "weights/r18.pth"\n'
        '[[evaluate.extra_sets]]\nname = "test"\nroot = "scenes/test"\n'
    )
    config = load_config(path)
    assert config.train.pretrained == str((tmp_path / "weights" / "r18.pth").resolve())
    assert config.evaluate.extra_sets[0].root == (tmp_path / "scenes" / "test").resolve()
    path.write_text('[train]\npretrained = "imagenet"\n')
    assert load_config(path).train.pretrained == "imagenet"


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


def test_frost_without_its_textures_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from saliqa.corrupt import weather

    monkeypatch.setattr(weather, "TEXTURE_DISTRIBUTION", "no-such-distribution")
    with pytest.raises(ConfigError, match="pip install no-such-distribution"):
        config_from_dict({"evaluate": {"corruptions": ["fog", "frost"]}})
    config_from_dict({"evaluate": {"corruptions": ["fog"]}})  # other corruptions need no texture


def test_settings_can_be_replaced_from_the_command_line() -> None:
    from saliqa.config import RunConfig, with_overrides

    config = with_overrides(
        RunConfig(), ["explain.sample=16", 'evaluate.corruptions=["fog"]', "explain.device=cpu"]
    )
    assert (config.explain.sample, config.evaluate.corruptions, config.explain.device) == (
        16,
        ("fog",),
        "cpu",
    )
    with pytest.raises(ConfigError, match="explain.samples: unknown key"):
        with_overrides(RunConfig(), ["explain.samples=3"])
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        with_overrides(RunConfig(), ["sample"])
    with pytest.raises(ConfigError, match="explain.corruptions: fog not evaluated"):
        with_overrides(RunConfig(), ['explain.corruptions=["fog"]'])


@pytest.mark.parametrize(
    ("explain", "message"),
    [
        ({"methods": ["occlusion"]}, "methods must be distinct names of gradcam"),
        ({"metrics": ["iou@0"]}, "K of iou@K must be in"),
        ({"options": {"smoothgrad": {"n_samples": 4}}}, "'smoothgrad' is not one of the methods"),
        ({"methods": ["smoothgrad"], "options": {"smoothgrad": {"seed": 4}}}, "come from the run's seed"),
        ({"methods": ["saliency"], "options": {"saliency": {"n": 2}}}, "unknown n"),
    ],
)
def test_explain_settings_are_checked_before_any_work(explain: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"explain": explain})
