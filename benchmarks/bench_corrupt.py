"""Corruption throughput: saliqa's batched corruptions against imagecorruptions' per-image loop.

For each corruption, the same 64 real photos of 375x500 (crops of scikit-image's and scikit-learn's
bundled photos) go through three paths in the same run:

- reference: ``imagecorruptions.corrupt`` image by image (imagecorruptions-imaug 1.1.5, numpy's global RNG);
- exact:     ``saliqa.corrupt.corrupt_batch`` on uint8 batches (float64, the reference's pixels);
- fast:      ``corrupt_batch`` on float32 batches in [0, 1] on ``--device`` (the GPU path when there is one).

Images per second and the ratio to the reference are printed; the target is at least 5x for the
corruptions that batch and never slower than the reference. Nothing is asserted.

    python benchmarks/bench_corrupt.py --images 64 --severity 3 --batch 16 [--only fog,snow] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from saliqa.corrupt import CORRUPTIONS, corrupt_batch

HEIGHT, WIDTH = 375, 500


def make_photos(n: int) -> np.ndarray:
    """``n`` uint8 (375, 500, 3) crops, cycling through the bundled colour photos and crop offsets."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    sources = [data.astronaut(), data.coffee(), data.rocket()]  # every one at least 375x500
    sources += [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    out = np.empty((n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for i in range(n):
        photo = sources[i % len(sources)]
        rng = np.random.default_rng(i)
        top = int(rng.integers(0, photo.shape[0] - HEIGHT + 1))
        left = int(rng.integers(0, photo.shape[1] - WIDTH + 1))
        out[i] = photo[top : top + HEIGHT, left : left + WIDTH, :3]
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_reference(photos: np.ndarray, name: str, severity: int) -> float:
    import imagecorruptions

    np.random.seed(0)
    start = time.perf_counter()
    for photo in photos:
        imagecorruptions.corrupt(photo, corruption_name=name, severity=severity)
    return time.perf_counter() - start


def time_batched(batches: list[torch.Tensor], name: str, severity: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for k, batch in enumerate(batches):
        ids = range(k * len(batch), (k + 1) * len(batch))
        corrupt_batch(batch, name, severity, seed=0, image_ids=ids)
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="images per corrupt_batch call")
    parser.add_argument("--only", default="", help="comma-separated corruption names (default: all 19)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in args.only.split(",") if n] or list(CORRUPTIONS)

    photos = make_photos(args.images)
    exact = [
        torch.from_numpy(photos[i : i + args.batch]).permute(0, 3, 1, 2)
        for i in range(0, len(photos), args.batch)
    ]
    fast = [b.to(device).float().div(255.0) for b in exact]
    print(
        f"{args.images} photos {HEIGHT}x{WIDTH}, severity {args.severity}, batches of {args.batch}, "
        f"fast path on {device}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'corruption':<18} {'batched':>7} {'ref img/s':>10} {'exact img/s':>12} {'x':>6} {'fast img/s':>11} {'x':>6}"
    )
    for name in names:
        time_batched(fast[:1], name, args.severity, device)  # warm-up (caches, kernels)
        ref = time_reference(photos, name, args.severity)
        ours_exact = time_batched(exact, name, args.severity, torch.device("cpu"))
        ours_fast = time_batched(fast, name, args.severity, device)
        n = len(photos)
        print(
            f"{name:<18} {'yes' if CORRUPTIONS[name].batched else 'no':>7} {n / ref:>10.1f} "
            f"{n / ours_exact:>12.1f} {ref / ours_exact:>6.2f} {n / ours_fast:>11.1f} {ref / ours_fast:>6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
