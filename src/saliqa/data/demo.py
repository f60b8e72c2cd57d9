"""The embedded demo dataset: random views of real photographs that ship inside installed wheels.

This is a stand-in, not a scene dataset. Each class is ONE photograph (scikit-image's astronaut,
scikit-learn's china, matplotlib's Grace Hopper, ...) and its images are random crops, flips and
resizes of it, so a classifier learns it in seconds. It exists so that every stage (rating,
splitting, training, corrupting, explaining, reporting) runs end to end in minutes, offline, with no
download; results on it say nothing about scene recognition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from saliqa.errors import ConfigError, DatasetError
from saliqa.seeding import rng_for

__all__ = ["DEMO_PHOTOS", "MIN_DEMO_CLASSES", "DemoPhoto", "build_demo", "load_demo_photos"]

logger = logging.getLogger(__name__)

#: Bump when the way views are made changes, so old demo folders are rebuilt rather than reused.
DEMO_FORMAT = 1
#: The build fails rather than produce a demo with fewer classes than this.
MIN_DEMO_CLASSES = 8
MANIFEST_NAME = ".demo.json"

_CROP_SCALE = (0.35, 1.0)
_CROP_ASPECT = (3 / 4, 4 / 3)
_JPEG = {"quality": 95, "subsampling": "4:4:4", "optimize": False}


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())

    return load


def _skimage_motorcycle() -> np.ndarray:
    import skimage.data

    return np.asarray(skimage.data.stereo_motorcycle()[0])


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(filename))

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook

        with cbook.get_sample_data(filename) as handle, Image.open(handle) as image:
            return np.asarray(image.convert("RGB"))

    return load


@dataclass(frozen=True)
class DemoPhoto:
    """One demo class: its name, where the photograph comes from, and how to load it offline."""

    name: str
    source: str
    load: Callable[[], np.ndarray]


#: The photographs, one per class, all read from files inside installed wheels (no network).
DEMO_PHOTOS: tuple[DemoPhoto, ...] = (
    DemoPhoto("astronaut", "scikit-image: skimage.data.astronaut()", _skimage("astronaut")),
    DemoPhoto("chelsea", "scikit-image: skimage.data.chelsea()", _skimage("chelsea")),
    DemoPhoto("coffee", "scikit-image: skimage.data.coffee()", _skimage("coffee")),
    DemoPhoto("rocket", "scikit-image: skimage.data.rocket()", _skimage("rocket")),
    DemoPhoto("motorcycle", "scikit-image: skimage.data.stereo_motorcycle()[0]", _skimage_motorcycle),
    DemoPhoto("hubble", "scikit-image: skimage.data.hubble_deep_field()", _skimage("hubble_deep_field")),
    DemoPhoto("ihc", "scikit-image: skimage.data.immunohistochemistry()", _skimage("immunohistochemistry")),
    DemoPhoto("retina", "scikit-image: skimage.data.retina()", _skimage("retina")),
    DemoPhoto(
        "china", "scikit-learn: sklearn.datasets.load_sample_image('china.jpg')", _sklearn("china.jpg")
    ),
    DemoPhoto(
        "flower", "scikit-learn: sklearn.datasets.load_sample_image('flower.jpg')", _sklearn("flower.jpg")
    ),
    DemoPhoto(
        "grace_hopper",
        "matplotlib: matplotlib.cbook.get_sample_data('grace_hopper.jpg')",
        _matplotlib("grace_hopper.jpg"),
    ),
)


def load_demo_photos() -> dict[str, Image.Image]:
    """Load every demo photograph as an RGB image, skipping (with a warning) any that will not load.

    Raises DatasetError if fewer than :data:`MIN_DEMO_CLASSES` load: a demo that small would not
    exercise the classifier meaningfully.
    """
    photos: dict[str, Image.Image] = {}
    for photo in DEMO_PHOTOS:
        try:
            array = np.asarray(photo.load())
            if array.ndim == 2:
                array = np.stack([array] * 3, axis=-1)
            if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
                raise ValueError(f"unexpected array {array.shape} {array.dtype}")
            photos[photo.name] = Image.fromarray(np.ascontiguousarray(array[..., :3]))
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party loader means "skip it"
            logger.warning("demo photo %r (%s) skipped: %s", photo.name, photo.source, exc)
    if len(photos) < MIN_DEMO_CLASSES:
        raise DatasetError(
            f"Only {len(photos)} of {len(DEMO_PHOTOS)} demo photographs could be loaded "
            f"(need {MIN_DEMO_CLASSES}); reinstall scikit-image, scikit-learn and matplotlib "
            "from their wheels, which bundle the photographs."
        )
    return photos


def _make_view(
    photo: Image.Image, seed: int, name: str, k: int, min_short_side: int, max_short_side: int
) -> Image.Image:
    """One random view; its randomness depends only on (seed, class, k), never on build order."""
    rng = rng_for(seed, "demo", name, k)
    width, height = photo.size
    scale = rng.uniform(*_CROP_SCALE)
    aspect = math.exp(rng.uniform(math.log(_CROP_ASPECT[0]), math.log(_CROP_ASPECT[1])))
    flip = bool(rng.random() < 0.5)
    short = int(rng.integers(min_short_side, max_short_side + 1))
    area = scale * width * height
    crop_w = min(width, max(1, round(math.sqrt(area * aspect))))
    crop_h = min(height, max(1, round(math.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    view = photo.crop((left, top, left + crop_w, top + crop_h))
    if flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if crop_w <= crop_h:
        size = (short, max(short, round(crop_h * short / crop_w)))
    else:
        size = (max(short, round(crop_w * short / crop_h)), short)
    return view.resize(size, Image.Resampling.LANCZOS)


def _parameters(seed: int, views_per_class: int, min_short_side: int, max_short_side: int) -> dict[str, Any]:
    """Everything that decides the bytes written; a demo folder is reused only if these match."""
    return {
        "format": DEMO_FORMAT,
        "seed": seed,
        "views_per_class": views_per_class,
        "min_short_side": min_short_side,
        "max_short_side": max_short_side,
        "crop_scale": list(_CROP_SCALE),
        "crop_aspect": list(_CROP_ASPECT),
        "jpeg": dict(_JPEG),
    }


def _tree_sha256(root: Path) -> tuple[str, int]:
    """One sha256 over every image file (relative path and content hash), and the file count."""
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    for file in files:
        content_sha = hashlib.sha256(file.read_bytes()).hexdigest()
        digest.update(f"{file.relative_to(root).as_posix()}\0{content_sha}\n".encode())
    return digest.hexdigest(), len(files)


def _matching_build(out_dir: Path, parameters: dict[str, Any]) -> bool:
    """True if out_dir holds an intact demo built with these parameters."""
    try:
        recorded = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("parameters") != parameters:
        return False
    sha, count = _tree_sha256(out_dir)
    if sha != recorded.get("sha256") or count != recorded.get("files"):
        logger.warning("demo folder %s was modified since it was built; rebuilding it", out_dir)
        return False
    return True


def _package_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in ("pillow", "scikit-image", "scikit-learn", "matplotlib"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def build_demo(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    views_per_class: int = 24,
    min_short_side: int = 256,
    max_short_side: int = 384,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the demo dataset to ``out_dir/<class>/<class>_{k:03d}.jpg`` and return ``out_dir``.

    A stand-in that runs every stage in minutes offline, not a scene dataset: each class is one
    bundled photograph (see :data:`DEMO_PHOTOS`), each image a random crop (35-100 % of the area,
    aspect 3/4-4/3), maybe flipped, resized so its short side is in [min_short_side, max_short_side].
    The same seed gives byte-identical files. The folder appears atomically, with ``.demo.json``
    (seed, parameters, photos, sha256 of the files); if it already holds an intact build with the
    same parameters nothing is done. A folder that is not a demo build is never overwritten.
    ``progress(done, total)`` is called after each image, for a progress bar.
    """
    if views_per_class < 1:
        raise ConfigError(f"views_per_class must be >= 1, got {views_per_class}")
    if not 1 <= min_short_side <= max_short_side:
        raise ConfigError(
            f"need 1 <= min_short_side <= max_short_side, got {min_short_side} and {max_short_side}"
        )
    out = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))
    parameters = _parameters(int(seed), views_per_class, min_short_side, max_short_side)
    if out.exists():
        if _matching_build(out, parameters):
            logger.info("demo already built in %s; reusing it", out)
            return out
        if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file()):
            raise DatasetError(
                f"{out} exists and is not a saliqa demo folder; choose another folder or remove it."
            )

    photos = load_demo_photos()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        total, done = len(photos) * views_per_class, 0
        for name, photo in photos.items():
            (tmp / name).mkdir()
            for k in range(views_per_class):
                view = _make_view(photo, int(seed), name, k, min_short_side, max_short_side)
                view.save(tmp / name / f"{name}_{k:03d}.jpg", format="JPEG", **_JPEG)
                done += 1
                if progress is not None:
                    progress(done, total)
        sha, count = _tree_sha256(tmp)
        record = {
            "what": "saliqa embedded demo: random views of bundled photographs, one photograph per class; "
            "a stand-in to run every stage offline, not a scene dataset",
            "seed": int(seed),
            "parameters": parameters,
            "photos": [
                {"name": p.name, "source": p.source, "size": list(photos[p.name].size)}
                for p in DEMO_PHOTOS
                if p.name in photos
            ],
            "skipped_photos": [p.name for p in DEMO_PHOTOS if p.name not in photos],
            "files": count,
            "sha256": sha,
            "versions": _package_versions(),
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the demo is ordinary data
        _install(tmp, out, parameters)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("demo built in %s: %d classes x %d views", out, len(photos), views_per_class)
    return out


def _install(tmp: Path, out: Path, parameters: dict[str, Any]) -> None:
    """Move the finished build into place; an old demo build is swapped out, then deleted."""
    old: Path | None = None
    if out.exists() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "demo")
    try:
        os.replace(tmp, out)
    except OSError:
        # Another process finished the same build first: keep theirs if it is what we wanted.
        if not _matching_build(out, parameters):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
