"""Quality models by name: the one place their names are declared. A plain mapping: adding a model is one
entry (and its parameter files, if any, in :data:`saliqa.iqa.weights.WEIGHTS`); an unknown name is an error."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from saliqa.device import resolve_device
from saliqa.errors import UnknownModelError, WeightsNotFoundError
from saliqa.iqa.base import QualityModel

if TYPE_CHECKING:
    from saliqa.iqa.nss import SlidingMap

Files = Mapping[str, Path]
"""Parameter files by :data:`saliqa.iqa.weights.WEIGHTS` name; a missing one is searched for."""


def _piqe(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.piqe import PIQE

    return PIQE(device=device)


def _paq2piq(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.paq2piq import PaQ2PiQ

    return PaQ2PiQ(files.get("paq2piq"), device=device)


def _niqe(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.niqe import NIQE

    return NIQE(files.get("niqe"), device=device)


def _brisque(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.brisque import BRISQUE

    return BRISQUE(files.get("brisque_model"), files.get("brisque_ranges"), device=device)


_FACTORIES: dict[str, Callable[[torch.device, Files], QualityModel]] = {
    "piqe": _piqe,
    "paq2piq": _paq2piq,
    "niqe": _niqe,
    "brisque": _brisque,
}


SLIDING_MAP_MODELS: tuple[str, ...] = ("niqe", "brisque")
"""Models that can draw their local map with sliding windows (:class:`saliqa.iqa.nss.SlidingMap`) instead of
their release's tiling; the others' own grids are fine enough on a 224 crop (PIQE 16 px, PaQ-2-PiQ 20 x 20)."""


def quality_model_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


TRAINED_PAQ2PIQ = "paq2piq:"
"""``paq2piq:<path>`` names PaQ-2-PiQ with the weights in that file (a ``best.pt`` of ``saliqa iqa train``, or any
file the official loader reads); plain ``paq2piq`` stays the official release's weights."""


def trained_weights(name: str) -> Path | None:
    """The weights file a ``paq2piq:<path>`` name points at; None for every other name."""
    if not name.startswith(TRAINED_PAQ2PIQ):
        return None
    path = name[len(TRAINED_PAQ2PIQ) :].strip()
    if not path:
        raise UnknownModelError(f"{name!r} names no file: write paq2piq:<path to a weights file>")
    return Path(path).expanduser()


def judge_label(name: str) -> str:
    """How figures and tables name a judge: ``NIQE``, or ``PAQ2PIQ (best.pt)`` for trained weights (the file's
    name, not its whole path; the path and hash are in the provenance)."""
    weights = trained_weights(name)
    return name.upper() if weights is None else f"PAQ2PIQ ({weights.name})"


def judge_slug(name: str) -> str:
    """A judge's name as one folder-name component: ``niqe``, or ``paq2piq-best`` for trained weights."""
    weights = trained_weights(name)
    if weights is None:
        return name
    return f"paq2piq-{weights.stem}-{hashlib.sha256(str(weights).encode()).hexdigest()[:8]}"


def is_quality_model_name(name: str) -> bool:
    """Whether ``name`` names a quality model (a registered name or ``paq2piq:<path>``); no file is looked at."""
    return name in _FACTORIES or (
        name.startswith(TRAINED_PAQ2PIQ) and bool(name[len(TRAINED_PAQ2PIQ) :].strip())
    )


def _trained_paq2piq(name: str, path: Path) -> Callable[[torch.device, Files], QualityModel]:
    def build(device: torch.device, files: Files) -> QualityModel:
        from saliqa.iqa.paq2piq import PaQ2PiQ

        model = PaQ2PiQ(files.get("paq2piq", path), device=device)
        model.name = name  # the tables name the judge as the config does, file included
        return model

    return build


def _factory(name: str) -> Callable[[torch.device, Files], QualityModel]:
    if (path := trained_weights(name)) is not None:
        return _trained_paq2piq(name, path)
    try:
        return _FACTORIES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown quality model {name!r}; available: {', '.join(_FACTORIES)}, or paq2piq:<weights file>"
        ) from None


def load_quality_model(
    name: str,
    device: str | torch.device = "auto",
    files: Files | None = None,
    sliding_map: SlidingMap | None = None,
) -> QualityModel:
    """A ready quality model: ``load_quality_model("piqe")``. Never falls back to another model.

    PaQ-2-PiQ, NIQE and BRISQUE read the parameter files given in ``files`` or, for those not given, found by
    :func:`saliqa.iqa.weights.find_weights` (``$SALIQA_WEIGHTS_DIR``, then the torch hub cache); a missing file
    is a ``WeightsNotFoundError`` that says where to put it and how to download it. ``sliding_map`` (NIQE and
    BRISQUE only): draw the local map with those windows instead of the release's tiling; scores are the same.
    """
    if sliding_map is not None and name not in SLIDING_MAP_MODELS:
        raise ValueError(
            f"a sliding map is for {' and '.join(SLIDING_MAP_MODELS)}; {name!r} keeps its own map grid"
        )
    model = _factory(name)(resolve_device(device), files or {})
    if sliding_map is not None:
        from saliqa.iqa.nss import NssQualityModel

        if not isinstance(model, NssQualityModel):  # SLIDING_MAP_MODELS lists NSS models only
            raise TypeError(f"{name!r} is listed in SLIDING_MAP_MODELS but is not an NSS model")
        model.use_sliding_map(sliding_map)
    return model


def find_model_files(name: str) -> dict[str, Path]:
    """The parameter files quality model ``name`` needs, found now (fails when one is missing)."""
    from saliqa.iqa.weights import find_weights, model_files

    _factory(name)
    if (path := trained_weights(name)) is not None:
        if not path.is_file():
            raise WeightsNotFoundError(
                f"quality model {name!r}: no weights file at {path}; train one with `saliqa iqa train` (its "
                f"best.pt) or correct the path"
            )
        return {"paq2piq": path.resolve()}
    return {weights: find_weights(weights) for weights in model_files(name)}


def check_quality_model(name: str) -> None:
    """Fail now, before any work, when ``name`` is unknown or one of its parameter files is missing."""
    find_model_files(name)
