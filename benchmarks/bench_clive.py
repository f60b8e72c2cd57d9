"""How well each quality model agrees with human opinion on LIVE In the Wild (CLIVE): SROCC and PLCC vs MOS.

627 real photos (500x500) with mean opinion scores. Lower-is-better models (NIQE, BRISQUE, PIQE) correlate
negatively with MOS; the table shows the signed coefficients and their magnitude. Published anchors (pyiqa
on CLIVE): NIQE 0.4505 and BRISQUE 0.3128 SROCC in magnitude. PLCC is reported both raw and after the usual
4-parameter logistic fit.

    python benchmarks/bench_clive.py --models niqe brisque piqe [--data ../shared/data/clive]

NIQE and BRISQUE read their files through ``$SALIQA_WEIGHTS_DIR``; when it is unset and
``../shared/data/iqa_params`` exists, the benchmark uses that folder.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from headline import headline
from scipy import optimize, stats

from saliqa.images import read_image, to_batch
from saliqa.iqa.registry import load_quality_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clive"
RELEASE_PARAMS = DEFAULT_DATA.parent / "iqa_params"
ANCHORS = {"niqe": 0.4505, "brisque": 0.3128}


def _logistic(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    return (b1 - b2) / (1 + np.exp(-(x - b3) / np.abs(b4))) + b2


def logistic_plcc(scores: np.ndarray, mos: np.ndarray) -> float:
    """PLCC after the 4-parameter logistic mapping of scores to MOS (VQEG practice)."""
    start = [mos.max(), mos.min(), float(np.median(scores)), float(np.std(scores)) or 1.0]
    try:
        params, _ = optimize.curve_fit(_logistic, scores, mos, p0=start, maxfev=20000)
    except RuntimeError:
        return float("nan")
    return float(stats.pearsonr(_logistic(scores, *params), mos)[0])


def score_images(model_name: str, paths: list[Path], device: str, batch: int) -> tuple[np.ndarray, float]:
    """Scores of every image (equal-size images rated in batches) and images per second."""
    model = load_quality_model(model_name, device=device)
    images = [read_image(p) for p in paths]
    scores = np.empty(len(images))
    start = time.perf_counter()
    i = 0
    while i < len(images):
        j = i + 1
        while j < len(images) and j - i < batch and images[j].shape == images[i].shape:
            j += 1
        scores[i:j] = model(to_batch(images[i:j])).score.double().cpu().numpy()
        i = j
    return scores, len(images) / (time.perf_counter() - start)


def correlations(scores: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(scores)
    s, m = scores[ok], mos[ok]
    return {
        "n": int(ok.sum()),
        "srocc": float(stats.spearmanr(s, m)[0]),
        "plcc": float(stats.pearsonr(s, m)[0]),
        "plcc_logistic": logistic_plcc(s, m),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=["niqe", "brisque", "piqe"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (quick look)")
    args = parser.parse_args()
    if "SALIQA_WEIGHTS_DIR" not in os.environ and RELEASE_PARAMS.is_dir():
        os.environ["SALIQA_WEIGHTS_DIR"] = str(RELEASE_PARAMS)  # NIQE's and BRISQUE's LIVE release files

    table = pd.read_csv(args.data / "clive_mos.csv")
    if args.limit:
        table = table.head(args.limit)
    paths = [args.data / "Images" / name for name in table["image"]]
    mos = table["mos"].to_numpy(dtype=float)
    rows = []
    for name in args.models:
        scores, speed = score_images(name, paths, args.device, args.batch)
        rows.append(
            {"model": name, **correlations(scores, mos), "img/s": speed, "anchor |srocc|": ANCHORS.get(name)}
        )
    result = pd.DataFrame(rows)
    result["|srocc|"] = result["srocc"].abs()
    print(f"CLIVE: {len(paths)} photos with MOS ({args.data})")
    print(result.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    anchored = result.dropna(subset=["anchor |srocc|"])
    if len(anchored):  # the published |SROCC| reached within 0.02 by every model that has one
        gap = float((anchored["|srocc|"] - anchored["anchor |srocc|"]).min())
        print(headline("bench_clive", "min_abs_srocc_minus_anchor", gap, ">=-0.02", gap >= -0.02))


if __name__ == "__main__":
    main()
