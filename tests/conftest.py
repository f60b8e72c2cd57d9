from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import corruption_helpers
import numpy as np
import pytest
import torch
from local_server import FileServer
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared test data (../shared/data); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos bundled with scikit-image and scikit-learn, colour and grey (the corruption tests' set)."""
    return corruption_helpers.photos()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Pixels do not depend on the thread count; on a busy shared CPU, OpenMP hand-offs make small ops up to
    100x slower, so the heaviest corruption tests run on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def server() -> Iterator[FileServer]:
    """A file server on 127.0.0.1 (``server.files[name] = bytes``), stopped after the test."""
    s = FileServer()
    yield s
    s.stop()


def load_image(path: Path) -> torch.Tensor:
    """An image file as a (1, 3, H, W) float64 batch in [0, 1] (Pillow's RGB conversion)."""
    pixels = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].to(torch.float64) / 255


def photo_batch(height: int = 200, width: int = 300) -> torch.Tensor:
    """Three real photos from scikit-image, cropped to one size: (3, 3, H, W) float64 in [0, 1]."""
    from skimage import data

    crops = [getattr(data, name)()[:height, :width, :3] for name in ("astronaut", "chelsea", "coffee")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(torch.float64) / 255


def assert_batch_equals_one_by_one(model: object, batch: torch.Tensor) -> None:
    """A quality model scores each image of a batch exactly as it scores it alone (score and patch map)."""
    together = model(batch)
    for i in range(batch.shape[0]):
        alone = model(batch[i : i + 1])
        assert torch.equal(alone.score, together.score[i : i + 1])
        torch.testing.assert_close(
            alone.patch_map, together.patch_map[i : i + 1], rtol=0, atol=0, equal_nan=True
        )


def _photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}


def make_folder_dataset(root: Path, per_class: int = 4, side: int = 256) -> Path:
    """ROOT/<class>/<image>.png cut from real photos bundled with scikit-image."""
    for name, photo in _photos().items():
        (root / name).mkdir(parents=True, exist_ok=True)
        h, w = photo.shape[:2]
        for k in range(per_class):
            y = (k * 37) % max(1, h - side)
            x = (k * 53) % max(1, w - side)
            crop = photo[y : y + side, x : x + side]
            Image.fromarray(crop).save(root / name / f"{name}_{k}.png")
    return root


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "dataset")


def assert_same_run(out: Path, reference: Path) -> None:
    """Two run directories hold bit-identical ratings, patch maps and splits."""
    import pandas as pd

    from saliqa.pipeline.mapstore import MapStore

    for table in ("ratings.parquet", "split.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / table), pd.read_parquet(reference / table), check_exact=True
        )
    ref, got = MapStore(reference / "quality_maps"), MapStore(out / "quality_maps")
    assert got.ids() == ref.ids()
    for image_id in ref.ids():
        np.testing.assert_array_equal(got.get(image_id)[0], ref.get(image_id)[0])
