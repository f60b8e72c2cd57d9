"""What NIQE's and BRISQUE's sliding-window map costs on 224 crops, against the release's 96-pixel tiling.

The picture score is the same either way; the sliding map adds the features of every window (9 x 9 windows of
96 pixels every 16 on a 224 crop, against the release's 2 x 2 tiles). Crops are cut from the photos bundled
with scikit-image, rated in batches of explain's default size (16), the settings taking turns after a warm-up
(median of the repeats, with their spread). NIQE and BRISQUE read their parameters from
``../shared/data/iqa_params`` (or wherever ``find_weights`` finds them).

    python benchmarks/bench_nss_maps.py --n 32 --threads 1

Use one thread on a shared machine: with two OpenMP threads and a core taken by another process, every
parallel region waits for the descheduled thread, and the times swing tenfold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from headline import headline, interleaved, spread

from saliqa.iqa.nss import NssQualityModel, SlidingMap

SIDE = 224
PARAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "iqa_params"
SETTINGS: dict[str, SlidingMap | None] = {
    "release": None,
    "sliding 96/16": SlidingMap(96, 16),
    "sliding 96/32": SlidingMap(96, 32),
}
TARGET = 1.0
"""Batched windows: one sliding window (default settings) costs no more than one 96-pixel tile of the release,
whose time also carries the picture score (the ratio of per-window to per-tile time, the worse of the two)."""


def crops(n: int) -> torch.Tensor:
    """``n`` RGB crops of 224 x 224 from the photos bundled with scikit-image, as a float64 batch in [0, 1]."""
    import skimage.data

    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    out = []
    for i in range(n):
        s = sources[i % len(sources)]
        rng = np.random.default_rng(i)
        top, left = (int(rng.integers(0, s.shape[k] - SIDE + 1)) for k in (0, 1))
        out.append(torch.from_numpy(np.ascontiguousarray(s[top : top + SIDE, left : left + SIDE, :3])))
    return torch.stack(out).permute(0, 3, 1, 2).double() / 255


def models(device: str) -> dict[str, NssQualityModel]:
    from saliqa.errors import WeightsNotFoundError
    from saliqa.iqa.brisque import BRISQUE
    from saliqa.iqa.niqe import NIQE

    def found(name: str, release_file: str) -> Path:
        from saliqa.iqa.weights import find_weights

        try:
            return find_weights(name)
        except WeightsNotFoundError:
            return PARAMS / release_file

    return {
        "niqe": NIQE(found("niqe", "niqe_image_params.mat"), device=device),
        "brisque": BRISQUE(
            found("brisque_model", "brisque_live_allmodel"),
            found("brisque_ranges", "brisque_live_allrange.txt"),
            device=device,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median; at least 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = crops(args.n).to(args.device)
    sync = torch.cuda.synchronize if batch.device.type == "cuda" else (lambda: None)
    print(
        f"{args.n} crops of {SIDE}x{SIDE}, batches of {args.batch}, {args.device}, {torch.get_num_threads()} threads"
    )
    per_crop: dict[tuple[str, str], float] = {}
    for name, model in models(args.device).items():

        def run(model: NssQualityModel = model, sliding: SlidingMap | None = None) -> None:
            model.use_sliding_map(sliding)
            for i in range(0, len(batch), args.batch):
                model(batch[i : i + args.batch])

        calls = {label: (lambda s=s: run(sliding=s)) for label, s in SETTINGS.items()}
        seconds = interleaved(calls, args.repeat, sync)
        for label, times in seconds.items():
            shape = model.use_sliding_map(SETTINGS[label])(batch[:1]).patch_map.shape[1:]
            per_crop[name, label] = 1000 * float(np.median(times)) / len(batch)
            ratio = per_crop[name, label] / per_crop[name, "release"]
            print(
                f"{name:8s} {label:14s} map {shape[0]}x{shape[1]}  {per_crop[name, label]:6.1f} ms/crop "
                f"({ratio:5.1f}x the release)  {spread(times, len(batch), 'crops/s')}"
            )
        model.use_sliding_map(None)
    tiles, windows = (SIDE // 96) ** 2, len(SlidingMap().offsets(SIDE)) ** 2
    worst = max(
        per_crop[n, "sliding 96/16"] / windows / (per_crop[n, "release"] / tiles) for n in ("niqe", "brisque")
    )
    print(
        f"a window costs {worst:.2f}x a release tile at most ({windows} windows against {tiles} tiles per crop)"
    )
    print(headline("bench_nss_maps", "window_over_tile_cost", worst, f"<={TARGET:g}", worst <= TARGET))


if __name__ == "__main__":
    main()
