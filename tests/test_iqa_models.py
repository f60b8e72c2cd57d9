"""The quality models behind the registry, in the pipeline, with the released parameter files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_folder_dataset
from scipy import stats

from saliqa.config import config_from_dict
from saliqa.images import read_image, to_batch
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.run import run_pipeline


@pytest.fixture
def release_params(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NIQE's and BRISQUE's LIVE release files, found through ``SALIQA_WEIGHTS_DIR``."""
    params = shared_data / "iqa_params"
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(params))
    return params


@pytest.mark.parametrize("name", ["niqe", "brisque"])
def test_rate_and_split_with_a_released_model(name: str, release_params: Path, tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=3, side=256)
    config = config_from_dict(
        {
            "data": {"source": "folder", "root": str(root)},
            "rate": {"iqa": name, "device": "cpu"},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"]},
        }
    )
    run_pipeline(config, tmp_path / "run", until="split", progress=False)
    ratings = pd.read_parquet(tmp_path / "run" / "ratings.parquet")
    assert (ratings["status"] == "ok").all() and (ratings["iqa"] == name).all()
    assert ratings["quality"].between(0, 100).all() and ratings["category"].notna().all()
    model = load_quality_model(name, device="cpu")
    direct = model(to_batch([read_image(ratings["path"].iloc[0])]))
    assert ratings["score"].iloc[0] == pytest.approx(float(direct.score[0]), rel=1e-12)


@pytest.mark.slow
def test_niqe_agrees_with_human_opinion_on_clive(shared_data: Path, release_params: Path) -> None:
    """NIQE on the 627 CLIVE photos: rank correlation with MOS beyond 0.3 in magnitude (pyiqa: 0.4505)."""
    table = pd.read_csv(shared_data / "clive" / "clive_mos.csv")
    model = load_quality_model("niqe", device="cpu")
    scores = []
    for start in range(0, len(table), 16):
        images = [
            read_image(shared_data / "clive" / "Images" / n) for n in table["image"][start : start + 16]
        ]
        sizes = {i.shape for i in images}
        batches = [images] if len(sizes) == 1 else [[i] for i in images]
        for batch in batches:
            scores.extend(model(to_batch(batch)).score.double().tolist())
    srocc = stats.spearmanr(np.asarray(scores), table["mos"])[0]
    print(f"NIQE SROCC on CLIVE: {srocc:.4f}")
    assert abs(srocc) > 0.3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("name", ["niqe", "brisque", "paq2piq"])
def test_cuda_gives_the_cpu_numbers(
    name: str, release_params: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skimage import data

    from saliqa.classify.p2p import P2PNet

    if name == "paq2piq":  # speed and parity do not depend on the values: random weights, official layout
        torch.save({"model": P2PNet(1).state_dict()}, tmp_path / "RoIPoolModel-fit.10.bs.120.pth")
        monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(tmp_path))
    batch = to_batch([data.astronaut()[:384, :480], data.astronaut()[64:448, 16:496]])
    cpu = load_quality_model(name, device="cpu")(batch)
    gpu = load_quality_model(name, device="cuda")(batch.cuda())
    tolerance = {"niqe": 1e-9, "brisque": 1e-9, "paq2piq": 1e-4}[name]  # float64 NSS; float32 network
    np.testing.assert_allclose(gpu.score.cpu().numpy(), cpu.score.numpy(), rtol=tolerance)
    np.testing.assert_allclose(
        gpu.patch_map.cpu().numpy(),
        cpu.patch_map.numpy(),
        rtol=1e-4,
        atol=1e-3 if name == "paq2piq" else 1e-6,
    )
    assert gpu.category == cpu.category
