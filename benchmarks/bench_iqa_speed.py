"""Images per second of every quality model at 512x384 on one device, PaQ-2-PiQ's forward as the yardstick.

Target: NIQE and BRISQUE no slower than PaQ-2-PiQ on CPU. Speed does not depend on the weights' values, so
PaQ-2-PiQ runs with random weights in the official layout when the released file is not on this machine;
NIQE and BRISQUE read their parameters from ``../shared/data/iqa_params`` (or wherever ``find_weights``
finds them).

    python benchmarks/bench_iqa_speed.py --n 32 --batch 8 --device cpu
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from headline import headline, interleaved, rate, spread

from saliqa.errors import WeightsNotFoundError
from saliqa.iqa.base import QualityModel

HEIGHT, WIDTH = 384, 512
PARAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "iqa_params"


def photos(n: int) -> torch.Tensor:
    """``n`` RGB crops of 384x512 from the photos bundled with scikit-image, as a float batch in [0, 1]."""
    import skimage.data

    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    sources = [s for s in sources if s.shape[0] >= HEIGHT and s.shape[1] >= WIDTH] or sources[:1]
    out = []
    for i in range(n):
        s = sources[i % len(sources)]
        rng = np.random.default_rng(i)
        top = int(rng.integers(0, s.shape[0] - HEIGHT + 1))
        left = int(rng.integers(0, s.shape[1] - WIDTH + 1))
        out.append(torch.from_numpy(np.ascontiguousarray(s[top : top + HEIGHT, left : left + WIDTH])))
    return torch.stack(out).permute(0, 3, 1, 2).float() / 255


def _param(name: str, release_file: str) -> Path | None:
    from saliqa.iqa.weights import find_weights

    try:
        return find_weights(name)
    except WeightsNotFoundError:
        path = PARAMS / release_file
        return path if path.exists() else None


def models(device: str, tmp: Path) -> dict[str, QualityModel]:
    from saliqa.classify.p2p import P2PNet
    from saliqa.iqa.brisque import BRISQUE
    from saliqa.iqa.niqe import NIQE
    from saliqa.iqa.paq2piq import PaQ2PiQ
    from saliqa.iqa.piqe import PIQE

    try:
        from saliqa.iqa.weights import find_weights

        p2p_file, note = find_weights("paq2piq"), "released weights"
    except WeightsNotFoundError:
        p2p_file, note = tmp / "p2p.pth", "random weights, official layout"
        torch.save({"model": P2PNet(1).state_dict()}, p2p_file)
    print(f"PaQ-2-PiQ: {note}")
    found = {
        "paq2piq": PaQ2PiQ(weights=p2p_file, device=device),
        "piqe": PIQE(device=device),
    }
    niqe = _param("niqe", "niqe_image_params.mat")
    if niqe is not None:
        found["niqe"] = NIQE(params_path=niqe, device=device)
    brisque_model = _param("brisque_model", "brisque_live_allmodel")
    brisque_ranges = _param("brisque_ranges", "brisque_live_allrange.txt")
    if brisque_model is not None and brisque_ranges is not None:
        found["brisque"] = BRISQUE(model_path=brisque_model, ranges_path=brisque_ranges, device=device)
    return found


def speeds_of(
    found: dict[str, QualityModel], batch: torch.Tensor, size: int, repeat: int
) -> dict[str, float]:
    """Images per second of each model: same batches and threads, warmed up, the models taking turns in each
    of ``repeat`` rounds; the medians (the spread is printed)."""

    def run(model: QualityModel) -> None:
        for i in range(0, len(batch), size):
            model(batch[i : i + size])

    def sync() -> None:
        if batch.device.type == "cuda":
            torch.cuda.synchronize()

    seconds = interleaved({name: lambda m=m: run(m) for name, m in found.items()}, repeat, sync)
    for name, times in seconds.items():
        print(f"  {name:8s} {spread(times, len(batch), 'img/s')}")
    return {name: rate(times, len(batch)) for name, times in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median; at least 3)")
    args = parser.parse_args()
    batch = photos(args.n).to(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        found = models(args.device, Path(tmp))
        speeds = speeds_of(found, batch, args.batch, args.repeat)
    base = speeds["paq2piq"]
    print(
        f"{args.n} images of {WIDTH}x{HEIGHT}, batches of {args.batch}, {args.device}, {torch.get_num_threads()} threads"
    )
    for name, speed in speeds.items():
        print(f"{name:8s} {speed:8.1f} img/s   {speed / base:5.2f}x PaQ-2-PiQ")
    for name in ("niqe", "brisque"):
        if name in speeds:
            verdict = "meets" if speeds[name] >= base else "misses"
            print(f"target {name} >= PaQ-2-PiQ on {args.device}: {verdict}")
    slowest = min(speeds.get(name, float("inf")) for name in ("niqe", "brisque")) / base
    print(headline("bench_iqa_speed", "slowest_of_niqe_brisque_over_paq2piq", slowest, ">=1", slowest >= 1))


if __name__ == "__main__":
    main()
