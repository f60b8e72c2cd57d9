"""Finding parameter files on this machine, and fetching them once, for any model that needs one.

A :class:`WeightsSpec` describes one file: its names, where it is published and how a good copy is
recognised. Search order for :func:`locate`:

1. an explicit path (a file, or a folder holding the file under one of its names); nothing else is tried;
2. ``$SALIQA_WEIGHTS_DIR``, under the release names or pyiqa's names;
3. the torch hub cache: ``torch.hub.get_dir()/saliqa`` (where downloads go when ``$SALIQA_WEIGHTS_DIR`` is
   not set), then ``torch.hub.get_dir()/pyiqa`` under the names pyiqa uses.

A model never falls back to another model's file: a missing one is a
:class:`~saliqa.errors.WeightsNotFoundError` naming the file, every place looked, where to put it and the
command that fetches it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from saliqa.errors import DownloadError, WeightsNotFoundError
from saliqa.io.download import WeightsFile, ensure_weights, verify_file

ENV_VAR = "SALIQA_WEIGHTS_DIR"
"""A folder holding parameter files under their own names; also where downloads go when it is set."""


@dataclass(frozen=True)
class WeightsSpec:
    """One parameter file: its names, where it is published and how to recognise a good copy."""

    name: str
    """Key of the file in its model family's table."""
    description: str
    model: str
    """The ``saliqa weights download`` argument that fetches it."""
    release_names: tuple[str, ...]
    """Names accepted in ``$SALIQA_WEIGHTS_DIR`` and saliqa's download folder; the first is the saved name."""
    pyiqa_names: tuple[str, ...] = ()
    """Names pyiqa keeps in ``torch.hub.get_dir()/pyiqa`` (also accepted in ``$SALIQA_WEIGHTS_DIR``)."""
    source: WeightsFile | None = None
    """Where the download comes from (``None``: written from saliqa's own copy of the published table)."""
    magic: tuple[bytes, ...] = ()
    """A downloaded file must start with one of these (an HTML error page or another format fails)."""
    origin: str = ""
    """Where the parameters were first published."""
    text: str | None = None
    """Content written instead of downloaded (``source`` is then ``None``)."""
    sha256: str | None = None
    """sha256 of ``text``."""

    @property
    def file_name(self) -> str:
        """The name a download or a hand-placed copy gets."""
        return self.source.file_name if self.source is not None else self.release_names[0]

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.release_names, *self.pyiqa_names)))


def hub_dirs() -> tuple[Path, Path]:
    """``torch.hub.get_dir()/saliqa`` and ``torch.hub.get_dir()/pyiqa``, read now (TORCH_HOME may change)."""
    hub = Path(torch.hub.get_dir())
    return hub / "saliqa", hub / "pyiqa"


def default_download_dir() -> Path:
    """``$SALIQA_WEIGHTS_DIR`` when set, else ``torch.hub.get_dir()/saliqa`` (both are searched)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else hub_dirs()[0]


@dataclass(frozen=True)
class WeightsLocation:
    """Where a file was found (``path``) or, when ``path`` is ``None``, every place looked."""

    name: str
    path: Path | None
    looked: tuple[str, ...]


def _first_file(directory: Path, names: tuple[str, ...], looked: list[str]) -> Path | None:
    for file_name in names:
        candidate = directory / file_name
        looked.append(str(candidate))
        if candidate.is_file():
            return candidate
    return None


def locate(spec: WeightsSpec, explicit: str | Path | None = None) -> WeightsLocation:
    """The search of :func:`find`, without raising: the path found, or ``None`` and the places looked."""
    looked: list[str] = []
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            return WeightsLocation(spec.name, _first_file(path, spec.candidates, looked), tuple(looked))
        looked.append(str(path))
        return WeightsLocation(spec.name, path if path.is_file() else None, tuple(looked))
    env = os.environ.get(ENV_VAR)
    searches: list[tuple[Path, tuple[str, ...]]] = [(Path(env).expanduser(), spec.candidates)] if env else []
    if not env:
        looked.append(f"${ENV_VAR} (not set)")
    saliqa_hub, pyiqa_hub = hub_dirs()
    searches += [(saliqa_hub, spec.release_names), (pyiqa_hub, spec.pyiqa_names)]
    for directory, names in searches:
        found = _first_file(directory, names, looked)
        if found is not None:
            return WeightsLocation(spec.name, found, tuple(looked))
    return WeightsLocation(spec.name, None, tuple(looked))


def _how_to_get(spec: WeightsSpec) -> str:
    where = default_download_dir() / spec.file_name
    by_hand = (
        f"or download {spec.source.url} by hand and put it at {where}"
        if spec.source is not None
        else f"which writes it to {where}"
    )
    return (
        f"Run `saliqa weights download {spec.model}` ({by_hand}), or put the file in ${ENV_VAR} "
        f"under one of the names {', '.join(spec.candidates)}"
    )


def find(spec: WeightsSpec, explicit: str | Path | None = None) -> Path:
    """The file ``spec`` describes: explicit path > ``$SALIQA_WEIGHTS_DIR`` > torch hub cache."""
    found = locate(spec, explicit)
    if found.path is not None:
        return found.path
    if explicit is not None:
        raise WeightsNotFoundError(
            f"no {spec.description} file at {explicit} ({spec.file_name} expected); looked in: "
            f"{', '.join(found.looked)}. Give an existing file, or run `saliqa weights download {spec.model}`"
        )
    raise WeightsNotFoundError(
        f"{spec.description} not found ({spec.file_name}); looked in: {', '.join(found.looked)}. "
        f"{_how_to_get(spec)}"
    )


def _check_magic(path: Path, spec: WeightsSpec) -> None:
    """Delete and refuse a download whose first bytes are not the expected format's."""
    if not spec.magic:
        return
    with open(path, "rb") as f:
        head = f.read(max(len(m) for m in spec.magic))
    if not any(head.startswith(m) for m in spec.magic):
        path.unlink(missing_ok=True)
        url = spec.source.url if spec.source is not None else ""
        raise DownloadError(
            f"{url} is not a {spec.description} file (it starts with {head[:20]!r}); it was deleted. "
            f"Download it by hand and put it at {path}"
        )


def _write_text(spec: WeightsSpec, dest: Path) -> Path:
    """Write a published table saliqa carries (checked against its sha256), atomically."""
    assert spec.text is not None
    if dest.is_file() and verify_file(dest, sha256=spec.sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(spec.text.encode("ascii"))
    problem = verify_file(part, sha256=spec.sha256)
    if problem is not None:  # the table in the code was edited: refuse rather than write another model
        part.unlink()
        raise DownloadError(f"saliqa's copy of the {spec.description} is damaged: {problem}")
    os.replace(part, dest)
    return dest


def download(spec: WeightsSpec, dest_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Fetch the file ``spec`` describes into ``dest_dir`` (default :func:`default_download_dir`), verified.

    A verified copy already there is reused without network; a partial ``.part`` file is resumed. Offline or
    on a failed check it raises :class:`DownloadError` naming the URL and the exact path to put the file at.
    """
    directory = Path(dest_dir).expanduser() if dest_dir is not None else default_download_dir()
    if spec.source is None:
        return _write_text(spec, directory / spec.file_name)
    try:
        path = ensure_weights(spec.source, directory, progress=progress)
    except DownloadError as err:
        raise DownloadError(f"{spec.description}: {err}") from err
    _check_magic(path, spec)
    return path
