"""Throughput of saliqa's batched PIQE against pypiqe's per-image loop, with a score check.

The test photos are 384x512 (H x W) grey crops of scikit-image's bundled colour photos, contrast-stretched
to max 255: on such images pypiqe follows MATLAB, so both must give the same scores.

    python benchmarks/bench_piqe.py --n 32 --device cpu
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from headline import headline, interleaved, spread

from saliqa.iqa.piqe import PIQE

HEIGHT, WIDTH = 384, 512
PHOTOS = ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def make_photos(n: int) -> list[np.ndarray]:
    """``n`` grey uint8 384x512 crops (max 255), cycling through photos and crop offsets."""
    import skimage.data

    sources = []
    for name in PHOTOS:
        rgb = getattr(skimage.data, name)()[:, :, :3].astype(np.float64)
        if rgb.shape[0] >= HEIGHT and rgb.shape[1] >= WIDTH:
            sources.append(rgb @ np.array([0.2125, 0.7154, 0.0721]))
    out = []
    for i in range(n):
        gray = sources[i % len(sources)]
        rng = np.random.default_rng(i)
        top = int(rng.integers(0, gray.shape[0] - HEIGHT + 1))
        left = int(rng.integers(0, gray.shape[1] - WIDTH + 1))
        crop = gray[top : top + HEIGHT, left : left + WIDTH]
        crop = np.round(255 * (crop - crop.min()) / (crop.max() - crop.min()))
        out.append(np.ascontiguousarray(crop.astype(np.uint8)))
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="number of images (default 32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved timed runs of each (median; at least 3)"
    )
    args = parser.parse_args()

    from pypiqe import piqe as pypiqe

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    photos = make_photos(args.n)
    batch = torch.from_numpy(np.stack(photos))[:, None].expand(-1, 3, -1, -1).to(torch.float32) / 255
    batch = batch.contiguous().to(device)
    model = PIQE(device)

    def sync() -> None:
        synchronize(device)

    results = {}
    calls = {
        "pypiqe": lambda: results.__setitem__("reference", np.array([pypiqe(p)[0] for p in photos])),
        "saliqa": lambda: results.__setitem__("ours", model(batch).score),
    }
    seconds = interleaved(calls, args.repeat, sync)
    reference, ours = results["reference"], results["ours"]
    diff = np.abs(ours.cpu().numpy() - reference)
    speedup = statistics.median(seconds["pypiqe"]) / statistics.median(seconds["saliqa"])
    print(
        f"{args.n} images {HEIGHT}x{WIDTH}, saliqa on {device}, torch threads {torch.get_num_threads()}, "
        f"{args.repeat} interleaved runs after a warm-up (median, range)"
    )
    print(f"scores: mean {reference.mean():.4f}, max |saliqa - pypiqe| = {diff.max():.3e}")
    print(f"pypiqe (per-image loop, the reference): {spread(seconds['pypiqe'], args.n, 'images/s')}")
    print(f"saliqa PIQE (batched):                  {spread(seconds['saliqa'], args.n, 'images/s')}")
    print(f"speed-up: {speedup:.2f}x (target >= 3x)")
    print(headline("bench_piqe", "speedup_over_pypiqe", speedup, ">=3", speedup >= 3))


if __name__ == "__main__":
    main()
