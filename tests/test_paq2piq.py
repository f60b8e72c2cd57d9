"""PaQ-2-PiQ against an independent forward written here, its file layouts, normalisation and real numbers."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_pool

from saliqa.classify.p2p import P2PNet
from saliqa.errors import CheckpointError, WeightsNotFoundError
from saliqa.io.hashing import sha256_file
from saliqa.iqa.paq2piq import (
    SCORE_MEAN,
    SCORE_STD_LEFT,
    SCORE_STD_RIGHT,
    PaQ2PiQ,
    full_fp32,
    normalise_score,
)
from saliqa.iqa.weights import find_weights

M, SL, SR = 72.59696108881171, 7.798274017370107, 4.118047289170692


def _random_state() -> dict[str, torch.Tensor]:
    """Random weights under the official key names; BN statistics random too, outputs spread around ~70."""
    gen = torch.Generator().manual_seed(1234)
    state = P2PNet(1).state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith(("running_mean", ".bias")):
            out[key] = 0.1 * torch.randn(value.shape, generator=gen)
        elif value.ndim == 1:  # BatchNorm weight
            out[key] = 0.8 + 0.4 * torch.rand(value.shape, generator=gen)
        else:
            fan_in = value[0].numel()
            out[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2.0 / fan_in)
    out["head.8.bias"] = torch.tensor([85.0])
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a small, busy CPU, OpenMP threads spinning against other processes make these
    tiny forwards ~30x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return _random_state()


@pytest.fixture(scope="module")
def files(state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same weights as the official fastai file (legacy serialisation), pyiqa's plain dict, DataParallel's."""
    root = tmp_path_factory.mktemp("p2p")
    paths = {name: root / f"{name}.pth" for name in ("fastai", "plain", "module")}
    opt = {"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99), "params": [0, 1]}]}
    torch.save({"model": state, "opt": opt}, paths["fastai"], _use_new_zipfile_serialization=False)
    torch.save(state, paths["plain"])
    torch.save({f"module.{k}": v for k, v in state.items()}, paths["module"])
    return paths


@pytest.fixture(scope="module")
def model(files: dict[str, Path]) -> PaQ2PiQ:
    return PaQ2PiQ(files["fastai"], grid=(5, 5))


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images with some structure, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, height // 8 + 2, width // 8 + 2, generator=gen)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(batch, 3, height, width, generator=gen)).clamp(0, 1)


# -- an independent forward: RoI pooling, concat pool, batchnorm and linear written out -----------------------


def _reference(state: dict[str, torch.Tensor], image: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Scores of ONE image ``(3, H, W)``: ``[picture, block (0,0), (0,1), ...]`` as the official code computes."""
    net = P2PNet(1)
    net.load_state_dict(state)
    net.eval()
    height, width = image.shape[1:]
    ys, xs = np.linspace(0, height, grid[0] + 1), np.linspace(0, width, grid[1] + 1)
    rois = [[0, 0, width, height]]
    rois += [[xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(grid[0]) for j in range(grid[1])]
    boxes = torch.cat([torch.zeros(len(rois), 1), torch.tensor(rois).float()], dim=1)
    with torch.no_grad():
        feats = net.body(image[None])
        pooled = roi_pool(feats, boxes, output_size=(2, 2), spatial_scale=1 / 32)
        x = torch.cat([pooled.amax(dim=(2, 3)), pooled.mean(dim=(2, 3))], dim=1)

        def bn(t: torch.Tensor, p: str) -> torch.Tensor:
            return F.batch_norm(
                t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                state[f"{p}.bias"], training=False, eps=1e-5,
            )  # fmt: skip

        x = bn(x, "head.2")
        x = torch.relu(x @ state["head.4.weight"].T + state["head.4.bias"])
        x = bn(x, "head.6")
        x = x @ state["head.8.weight"].T + state["head.8.bias"]
    return x[:, 0]


def test_matches_independent_forward(model: PaQ2PiQ, state: dict[str, torch.Tensor]) -> None:
    images = _images(2, 64, 96)
    out = model(images)
    for b in range(2):
        ref = _reference(state, images[b], (5, 5))
        assert out.score[b].item() == pytest.approx(ref[0].item(), abs=1e-4)
        torch.testing.assert_close(normalise_score(out.score[b]), normalise_score(ref[0]), atol=1e-4, rtol=0)
        blocks = model.predict(images)[1]
        torch.testing.assert_close(blocks[b], ref[1:].reshape(5, 5), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(
            out.patch_map[b], normalise_score(ref[1:]).reshape(5, 5).float(), atol=1e-3, rtol=0
        )
    assert not torch.equal(out.score[0], out.score[1])
    assert len(set(blocks.flatten().tolist())) > 10  # the blocks differ: a real map, not one value repeated


def test_output_types_and_grid(model: PaQ2PiQ, files: dict[str, Path]) -> None:
    images = _images(2, 64, 96, seed=3)
    out = model(images)
    assert out.score.dtype == torch.float64 and out.score.shape == (2,)
    assert out.quality.dtype == torch.float64 and torch.equal(out.quality, normalise_score(out.score))
    assert out.patch_map.dtype == torch.float32 and out.patch_map.shape == (2, 5, 5)
    assert out.grid.row_edges == tuple(np.linspace(0, 64, 6)) and out.grid.col_edges == tuple(
        np.linspace(0, 96, 6)
    )
    assert out.category == [
        ["Bad", "Poor", "Fair", "Good", "Excellent"][min(4, int(q // 20))] for q in out.quality
    ]
    assert model.higher_is_better and model.name == "paq2piq"
    assert model.fingerprint() == {
        "name": "paq2piq",
        "weights_sha256": sha256_file(files["fastai"]),
        "grid": "5x5",
    }
    assert not model.net.training


def test_grid_option_and_odd_size(files: dict[str, Path], state: dict[str, torch.Tensor]) -> None:
    small = PaQ2PiQ(files["plain"], grid=(3, 4))
    image = _images(1, 45, 71, seed=5)
    picture, blocks = small.predict(image)
    ref = _reference(state, image[0], (3, 4))
    assert blocks.shape == (1, 3, 4)
    torch.testing.assert_close(picture[0], ref[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(blocks[0], ref[1:].reshape(3, 4), atol=1e-4, rtol=1e-5)
    out = small(image)
    assert out.grid.shape == (3, 4) and out.grid.height == 45 and out.grid.width == 71
    assert small.fingerprint()["grid"] == "3x4"
    assert PaQ2PiQ(files["plain"]).grid_shape == (20, 20)
    with pytest.raises(ValueError, match="grid"):
        PaQ2PiQ(files["plain"], grid=(0, 3))


def test_batch_does_not_change_scores(model: PaQ2PiQ) -> None:
    images = _images(3, 40, 56, seed=9)
    together = model.predict(images)
    for b in range(3):
        alone = model.predict(images[b : b + 1])
        torch.testing.assert_close(alone[0][0], together[0][b], atol=1e-4, rtol=0)
        torch.testing.assert_close(alone[1][0], together[1][b], atol=1e-4, rtol=0)


def test_three_layouts_load_identically(files: dict[str, Path]) -> None:
    images = _images(1, 64, 96, seed=1)
    outs = [PaQ2PiQ(path, grid=(5, 5)).predict(images) for path in files.values()]
    for picture, blocks in outs[1:]:
        assert torch.equal(picture, outs[0][0]) and torch.equal(blocks, outs[0][1])


def test_missing_counters_are_tolerated(state: dict[str, torch.Tensor], tmp_path: Path, files: dict) -> None:
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    images = _images(1, 32, 48)
    a, b = PaQ2PiQ(tmp_path / "old.pth").predict(images), PaQ2PiQ(files["plain"]).predict(images)
    assert torch.equal(a[0], b[0])


def test_mismatched_file_lists_missing_and_unexpected(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    bad = dict(state)
    del bad["head.4.weight"]
    bad["head.9.weight"] = torch.zeros(1)
    torch.save({"model": bad, "opt": {}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        PaQ2PiQ(tmp_path / "bad.pth")
    message = str(info.value)
    assert "missing keys: head.4.weight" in message and "unexpected keys: head.9.weight" in message

    shaped = dict(state)
    shaped["head.8.weight"] = torch.zeros(2, 512)
    torch.save(shaped, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"head.8.weight \(2, 512\) != \(1, 512\)"):
        PaQ2PiQ(tmp_path / "shape.pth")


class Payload:
    """A class a weights-only unpickler must refuse to rebuild."""


def test_pickle_needing_code_is_refused(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    torch.save({"model": state, "opt": Payload()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="unpickling it would run code"):
        PaQ2PiQ(tmp_path / "code.pth")


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="saliqa weights download paq2piq"):
        PaQ2PiQ(tmp_path / "absent.pth")


def test_building_leaves_the_global_rng_alone(files: dict[str, Path]) -> None:
    before = torch.random.get_rng_state()
    PaQ2PiQ(files["plain"])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_full_fp32_switches_tf32_off_on_cuda_only() -> None:
    """Flags only, so it runs without a GPU; the H100 check (CUDA vs CPU within 2e-5) is in the report."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.allow_tf32, matmul.allow_tf32 = True, True
        with full_fp32(torch.device("cpu")):
            assert cudnn.allow_tf32 and matmul.allow_tf32
        with pytest.raises(RuntimeError, match="boom"), full_fp32(torch.device("cuda")):
            assert not cudnn.allow_tf32 and not matmul.allow_tf32
            raise RuntimeError("boom")
        assert cudnn.allow_tf32 and matmul.allow_tf32
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


# -- normalisation ---------------------------------------------------------------------------------------------


def test_normalisation_constants() -> None:
    assert (SCORE_MEAN, SCORE_STD_LEFT, SCORE_STD_RIGHT) == (M, SL, SR)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (M, M),  # exactly the mean
        (M - 2 * SL, M / 2),  # halfway down the left branch
        (M - 4 * SL, 0.0),  # the left branch reaches 0 ...
        (M - 4 * SL - 1, 0.0),  # ... and is clipped below it
        (-5.0, 0.0),  # a raw score below 0
        (M + 2 * SR, M + (100 - M) / 2),  # halfway up the right branch
        (M + 4 * SR, 100.0),
        (100.0, 100.0),  # raw 100 is past m + 4 sr: clipped
        (130.0, 100.0),
        (60.0, M + M * (60.0 - M) / (4 * SL)),
        (75.0, M + (100 - M) * (75.0 - M) / (4 * SR)),
    ],
)
def test_normalisation_values(raw: float, expected: float) -> None:
    got = normalise_score(torch.tensor([raw], dtype=torch.float64)).item()
    assert got == pytest.approx(expected, abs=1e-12)


def test_normalisation_special_values_and_categories() -> None:
    raw = torch.tensor([float("nan"), float("inf"), float("-inf"), M, 100.0, 0.0], dtype=torch.float64)
    q = normalise_score(raw)
    assert math.isnan(q[0]) and q[1:].tolist() == [100.0, 0.0, M, 100.0, 0.0]
    from saliqa.iqa.categories import categorize_quality

    assert categorize_quality(q.numpy()) == [None, "Excellent", "Bad", "Good", "Excellent", "Bad"]
    # A float32 score is compared exactly as the release compares numpy's float32 with a Python float:
    # float32(m) is not m, so it takes a branch and lands next to m rather than on it.
    from_float32 = normalise_score(torch.tensor([M], dtype=torch.float32))
    assert from_float32.dtype == torch.float64 and from_float32.item() == pytest.approx(M, abs=1e-5)


# -- the real weights ------------------------------------------------------------------------------------------


def _rgb(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255.0


@pytest.fixture(scope="module")
def real_weights() -> Path:
    try:
        return find_weights("paq2piq")
    except WeightsNotFoundError as err:
        pytest.skip(f"real PaQ-2-PiQ weights not on this machine: {str(err)[:160]}")


def test_official_numbers(real_weights: Path, shared_data: Path) -> None:
    picture1 = _rgb(shared_data / "paq2piq" / "images" / "Picture1.jpg")
    demo = PaQ2PiQ(real_weights, grid=(5, 5))
    score, blocks = demo.predict(picture1)
    assert score.item() == pytest.approx(78.96265, abs=2e-3)
    # The reference notes call this "row 1" without saying whether counting starts at 0 or 1: accept either.
    row1 = np.array([51.78375, 47.534958, 51.692028, 51.02082, 49.804256])
    gaps = [float(np.abs(blocks[0, i].numpy() - row1).max()) for i in (0, 1)]
    assert min(gaps) < 2e-3, f"5x5 rows 0 and 1 differ from the official row by {gaps}"

    model = PaQ2PiQ(real_weights)
    with open(shared_data / "paq2piq" / "scores.csv") as f:
        listed = {row["name"]: float(row["mos"]) for row in csv.DictReader(f)}
    assert listed["Picture1.jpg"] == pytest.approx(78.96265, abs=1e-4)
    for name, expected in listed.items():  # RGBA PNGs, odd sizes, a space in a file name
        out = model(_rgb(shared_data / "paq2piq" / "images" / name))
        assert out.score.item() == pytest.approx(expected, abs=2e-3), name

    tid = {"I03": 44.1340, "I04": 73.6015, "I06": 74.3297, "I08": 76.8748, "I19": 70.9153}
    for name, expected in tid.items():
        out = model(_rgb(shared_data / "iqa_calibration" / "dist_dir" / f"{name}.bmp"))
        assert out.score.item() == pytest.approx(expected, abs=2e-3), name
