"""Corruption throughput: saliqa's batched corruptions against imagecorruptions' per-image loop.

For each corruption, the same real photos of 375x500 (crops of scikit-image's and scikit-learn's bundled
photos) go through three paths in the same run:

- reference: ``imagecorruptions.corrupt`` image by image (imagecorruptions-imaug 1.1.5, numpy's global RNG);
- exact:     ``saliqa.corrupt.corrupt_batch`` on uint8 batches (float64, the reference's pixels);
- fast:      ``corrupt_batch`` on float32 batches in [0, 1] on ``--device`` (the GPU path when there is one).

Every path is warmed up first, then the three are timed in turn, ``--repeats`` times, rotating which goes
first, so a slow spell of the machine hits all three alike; the median of the repeats is reported with
its spread ((max - min) / median). The reference gets the same thread count as torch (OpenCV's pool is
set to it), and both see the same ``--compete`` load: that many busy processes (two threads each) started
for the run, to measure the paths on an oversubscribed machine.

Images per second and the ratio to the reference are printed, then the lowest ratio of each path; the last
two lines are machine-readable (``benchmarks/headline.py``, collected by ``benchmarks/summary.py``):

    HEADLINE bench_corrupt min_ratio_exact=<x> target=>=1.0 ok=<yes|no>
    HEADLINE bench_corrupt min_ratio_fast=<x> target=>=1.0 ok=<yes|no>

Nothing is asserted.

    python benchmarks/bench_corrupt.py --images 32 --severity 3 --batch 16 [--only fog,snow] [--repeats 3]
        [--device cuda] [--threads 2] [--compete 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from headline import headline

from saliqa.corrupt import CORRUPTIONS, corrupt_batch

HEIGHT, WIDTH = 375, 500
PATHS = ("reference", "exact", "fast")
TARGET = 1.0
WIDTHS = {"reference": 9, "exact": 11, "fast": 10}  # the img/s columns


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


def run_reference(photos: np.ndarray, name: str, severity: int) -> None:
    import imagecorruptions

    np.random.seed(0)
    for photo in photos:
        imagecorruptions.corrupt(photo, corruption_name=name, severity=severity)


def run_batched(batches: list[torch.Tensor], name: str, severity: int) -> None:
    synchronize(batches[0].device)
    for k, batch in enumerate(batches):
        ids = range(k * len(batch), (k + 1) * len(batch))
        corrupt_batch(batch, name, severity, seed=0, image_ids=ids)
    synchronize(batches[0].device)


def seconds(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_paths(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each path per repeat, the paths interleaved and the first one rotated every repeat."""
    times: dict[str, list[float]] = {path: [] for path in runs}
    order = list(runs)
    for repeat in range(repeats):
        turn = order[repeat % len(order) :] + order[: repeat % len(order)]
        for path in turn:
            times[path].append(seconds(runs[path]))
    return times


def spread(values: list[float]) -> float:
    """(max - min) / median: how much the repeats disagree."""
    return (max(values) - min(values)) / statistics.median(values)


def _busy(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """A CPU-bound competitor: float32 matrix products on two threads until told to stop."""
    torch.set_num_threads(2)
    a = torch.rand(512, 512)
    while not stop.is_set():
        a = torch.mm(a, a).clamp_(0.0, 1.0)


@contextmanager
def competing_load(processes: int) -> Iterator[None]:
    """``processes`` busy processes running alongside the measurement (none when 0)."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    workers = [context.Process(target=_busy, args=(stop,), daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(2.0 if processes else 0.0)  # let them start their loops
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def set_threads(threads: int | None) -> int:
    """Give torch and OpenCV (the reference's filters) the same intra-op thread count; return it."""
    import cv2

    if threads is not None:
        torch.set_num_threads(threads)
    cv2.setNumThreads(torch.get_num_threads())
    return torch.get_num_threads()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="images per corrupt_batch call")
    parser.add_argument("--only", default="", help="comma-separated corruption names (default: all 19)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of torch and OpenCV")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per path, at least 3 (median)")
    parser.add_argument("--compete", type=int, default=0, help="busy processes running alongside")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3 for a median, got {args.repeats}")
    return args


def measure(
    name: str,
    photos: np.ndarray,
    exact: list[torch.Tensor],
    fast: list[torch.Tensor],
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    """Warm every path up, then time the three interleaved; seconds per repeat by path."""
    runs = {
        "reference": lambda: run_reference(photos, name, args.severity),
        "exact": lambda: run_batched(exact, name, args.severity),
        "fast": lambda: run_batched(fast, name, args.severity),
    }
    run_reference(photos[:2], name, args.severity)
    run_batched(exact[:1], name, args.severity)
    run_batched(fast[:1], name, args.severity)
    return time_paths(runs, args.repeats)


def main() -> None:
    args = parse_args()
    threads = set_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in args.only.split(",") if n] or list(CORRUPTIONS)
    photos = make_photos(args.images)
    exact = [
        torch.from_numpy(photos[i : i + args.batch]).permute(0, 3, 1, 2)
        for i in range(0, len(photos), args.batch)
    ]
    fast = [b.to(device).float().div(255.0) for b in exact]
    print(
        f"{args.images} photos {HEIGHT}x{WIDTH}, severity {args.severity}, batches of {args.batch}, fast path "
        f"on {device}, {threads} threads (torch and OpenCV), median of {args.repeats} interleaved repeats, "
        f"{args.compete} competing processes"
    )
    print(
        f"{'corruption':<18} {'ref img/s':>9} {'+-':>4} {'exact img/s':>11} {'+-':>4} {'x':>6} "
        f"{'fast img/s':>10} {'+-':>4} {'x':>6}"
    )
    ratios: dict[str, dict[str, float]] = {"exact": {}, "fast": {}}
    with competing_load(args.compete):
        for name in names:
            times = measure(name, photos, exact, fast, args)
            median = {path: statistics.median(times[path]) for path in PATHS}
            cells = []
            for path in PATHS:
                cells.append(f"{len(photos) / median[path]:>{WIDTHS[path]}.1f}")
                cells.append(f"{spread(times[path]):>4.0%}")
                if path != "reference":
                    ratios[path][name] = median["reference"] / median[path]
                    cells.append(f"{ratios[path][name]:>6.2f}")
            print(f"{name:<18} " + " ".join(cells), flush=True)
    for path in ("exact", "fast"):
        lowest = min(ratios[path], key=ratios[path].__getitem__)
        print(
            f"lowest {path} ratio: {lowest} (images={args.images} severity={args.severity} batch={args.batch} "
            f"threads={threads} compete={args.compete})"
        )
    for path in ("exact", "fast"):
        worst = min(ratios[path].values())
        print(headline("bench_corrupt", f"min_ratio_{path}", worst, f">={TARGET}", worst >= TARGET))


if __name__ == "__main__":
    main()
