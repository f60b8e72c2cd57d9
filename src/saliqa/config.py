"""The run configuration: pydantic models read from TOML, validated before any work starts.

Every field has a default, and the defaults are the embedded demo, so ``saliqa run`` with no config file
runs the whole pipeline offline. Later stages add their own sections here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saliqa.errors import ConfigError
from saliqa.iqa.categories import CATEGORIES

QUALITY_MODELS: tuple[str, ...] = ("piqe",)
"""Quality models this version can run; others fail at validation, never silently fall back."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Which images to use."""

    source: Literal["demo", "folder", "mit67", "manifest"] = "demo"
    """``demo``: the embedded demo, built in the run directory; ``folder``: ROOT/<class>/<image>;
    ``mit67``: MIT Indoor 67 (ROOT/Images/<class>/..., optional TrainImages.txt/TestImages.txt);
    ``manifest``: a CSV with ``path,label[,split]``."""
    root: Path | None = None
    """Dataset folder (or the CSV file for ``manifest``); required unless ``source = "demo"``."""
    listed_only: bool = False
    """MIT Indoor 67 only: use just the files named in TrainImages.txt/TestImages.txt."""
    demo_views_per_class: int = Field(24, ge=2, le=1000)
    """Demo only: views cut from each bundled photo."""

    @model_validator(mode="after")
    def _root_needed(self) -> DataConfig:
        if self.source != "demo" and self.root is None:
            raise ValueError(f"root is required when source = {self.source!r}")
        return self


class ImagesConfig(_Section):
    """How files are decoded; see :mod:`saliqa.images`."""

    max_pixels: int = Field(150_000_000, gt=0)
    oversize: Literal["reject", "downscale"] = "reject"
    min_side: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _some_image_fits(self) -> ImagesConfig:
        if self.max_pixels < self.min_side**2:
            raise ValueError(
                f"max_pixels={self.max_pixels} is below min_side**2={self.min_side**2}: no image fits"
            )
        return self


class RateConfig(_Section):
    """Stage rate: the quality judge and how the work is cut."""

    iqa: str = "piqe"
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    batch_size: int = Field(16, ge=1)
    """Images of equal size rated in one call."""
    shard_size: int = Field(256, ge=1)
    """Images per resumable unit of work."""
    workers: int = Field(2, ge=0)
    """Decoding threads (0 = decode in the main thread)."""

    @field_validator("iqa")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in QUALITY_MODELS:
            raise ValueError(f"unknown quality model {value!r}; choose one of {', '.join(QUALITY_MODELS)}")
        return value

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")
        return value


class SplitConfig(_Section):
    """Stage split: which categories to keep and how to divide them."""

    keep: tuple[Literal["Bad", "Poor", "Fair", "Good", "Excellent"], ...] = ("Good", "Excellent")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    min_per_class: int = Field(2, ge=2)
    """A class with fewer kept images is left out of the split, with a message saying so."""

    @field_validator("keep")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"keep at least one of {', '.join(CATEGORIES)}")
        return tuple(c for c in CATEGORIES if c in value)


class RunConfig(_Section):
    """A whole run. One seed drives every random choice."""

    seed: int = 0
    data: DataConfig = DataConfig()
    images: ImagesConfig = ImagesConfig()
    rate: RateConfig = RateConfig()
    split: SplitConfig = SplitConfig()


def _explain(error: ValidationError, origin: str) -> ConfigError:
    lines = []
    for item in error.errors():
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"]).lstrip(".")
        key = key or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
        lines.append(f"{key}: {message}")
    return ConfigError(f"invalid config {origin}: " + "; ".join(lines))


def config_from_dict(values: dict[str, Any], origin: str = "(dict)") -> RunConfig:
    """Validate a plain dict; errors name every bad key."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as error:
        raise _explain(error, origin) from None


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read and validate a TOML config; ``None`` gives the defaults (the embedded demo).

    Relative ``data.root`` paths are resolved against the config file's folder.
    """
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config {path}: {type(error).__name__}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from None
    root = values.get("data", {}).get("root") if isinstance(values.get("data"), dict) else None
    if isinstance(root, str) and not Path(root).expanduser().is_absolute():
        values["data"]["root"] = str((path.parent / root).resolve())
    return config_from_dict(values, origin=str(path))


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """Plain JSON/TOML-ready values (paths as strings, no None)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean(config.model_dump(mode="json"))


def dump_config(config: RunConfig) -> str:
    """The resolved config as TOML (what ``config.toml`` in a run directory holds)."""
    return tomli_w.dumps(config_to_dict(config))
