"""Throughput of stage evaluate against a bare loop doing the same work, and its peak memory on 200 vs 2,000 images.

Throughput: image-conditions per second of the evaluate stage's own loop (decoding, distortion and cropping
in loader workers, overlapped with the models; shards, rows) against a bare loop that does the same work in
one plain loop: decode, distort and crop each image in the main process, then judge its crops (classifier,
quality model, PSNR / MS-SSIM against the clean crop) in calls of the same ``--batch`` crops at the same
torch thread count -- same images, conditions and models. Both are warmed up; the repeats alternate (bare,
pipeline, bare, ...) so a busy neighbour slows both alike; medians and the spread (min-max) are printed. The
models alone on prepared crops (same batch size) are printed too: the bound no loop can pass.
Target: the pipeline reaches at least 0.75 of the bare loop. ``--iqa paq2piq`` judges with PaQ-2-PiQ (random
weights when none are installed: the speed is the same); ``--precision mixed`` runs the networks as evaluate's
``precision = "mixed"`` does and first checks it against float32 on the same crops (top-1 identical on at least
99.9 %, quality within 0.01). On CUDA the pipeline's rate is a headline too (target 1,500 image-conditions/s on
one H100-class GPU: ImageNet-val x 96 conditions in under an hour).

Memory: the evaluate loop on 200 and on 2,000 images (``--memory-crop`` 112 by default, to keep it to a few
minutes on 2 cores; the images and the distortions are full size), each in a fresh process; peak resident
memory of the main process and of the largest loader worker. Target: 2,000 within 1.5x of 200.

    python benchmarks/bench_evaluate.py --n 48 --device cpu
    python benchmarks/bench_evaluate.py --device cuda --distort-on device --iqa paq2piq --precision mixed --skip-memory
    python benchmarks/bench_evaluate.py --memory-only --memory-conditions 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from headline import headline
from PIL import Image

from saliqa.classify.models import build_classifier
from saliqa.classify.p2p import P2PNet
from saliqa.corrupt import SELECTIONS, corruption_names
from saliqa.errors import WeightsNotFoundError
from saliqa.images import DecodePolicy
from saliqa.iqa.base import QualityModel
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.crops import image_crops
from saliqa.pipeline.evaluation import evaluate_records
from saliqa.pipeline.models import Judges
from saliqa.pipeline.plan import CropPlan, Runtime, conditions
from saliqa.precision import runs_mixed

HEIGHT, WIDTH, CROP = 375, 500, 224
RANDOM_JUDGE: set[str] = set()  # quality models that run on random weights here (none were installed)
CORRUPTIONS = ("brightness", "contrast", "saturate", "jpeg_compression")


def make_images(folder: Path, n: int) -> list[dict]:
    """``n`` JPEG files of 375x500 cut from the colour photos bundled with scikit-image and scikit-learn."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    photos += [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    photos = [p for p in photos if p.shape[0] >= HEIGHT and p.shape[1] >= WIDTH]
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        photo = photos[i % len(photos)]
        rng = np.random.default_rng(i)
        top = int(rng.integers(0, photo.shape[0] - HEIGHT + 1))
        left = int(rng.integers(0, photo.shape[1] - WIDTH + 1))
        path = folder / f"img{i:05d}.jpg"
        if not path.exists():
            Image.fromarray(photo[top : top + HEIGHT, left : left + WIDTH]).save(path, quality=90)
        records.append({"image_id": path.name, "path": str(path), "label": f"c{i % 10}", "set": "val"})
    return records


def quality_model(name: str, device: str, folder: Path) -> QualityModel:
    """``name`` on ``device``; PaQ-2-PiQ with seeded random weights (said so) when none are installed."""
    try:
        return load_quality_model(name, device=device)
    except WeightsNotFoundError:
        if name != "paq2piq":
            raise
    torch.manual_seed(0)
    weights = folder / "RoIPoolModel-fit.10.bs.120.pth"
    torch.save({"model": P2PNet(1).state_dict()}, weights)
    print("PaQ-2-PiQ: no installed weights, random ones (the same speed; scores mean nothing)")
    RANDOM_JUDGE.add(name)
    return load_quality_model(name, device=device, files={"paq2piq": weights})


def make_judges(device: str, batch_size: int, quality: QualityModel, precision: str = "float32") -> Judges:
    """A seeded P2P-head ResNet-18 over 10 classes and ``quality``, in ``precision`` as evaluate builds them."""
    classes = [f"c{k}" for k in range(10)]
    model = build_classifier("p2p-resnet18", len(classes), seed=0).to(device).eval()
    return Judges(model, classes, quality, batch_size, precision)


def precision_check(records: list[dict], conds: tuple, device: str, batch: int, iqa: str, folder: Path):
    """Top-1 identical share and largest quality difference of mixed against float32 on the same crops."""
    n = len(conds)
    crops = torch.cat([image_crops(r["path"], _plan(conds), r["image_id"]).crops for r in records])
    labels = torch.tensor([int(r["label"][1:]) for r in records]).repeat_interleave(n)
    clean = torch.arange(len(crops)) // n * n
    judged = {}
    for precision in ("float32", "mixed"):
        judges = make_judges(device, batch, quality_model(iqa, device, folder), precision)
        judged[precision] = judges(crops, labels, clean)
    same_top1 = float((judged["mixed"]["topk"][:, 0] == judged["float32"]["topk"][:, 0]).mean())
    quality_gap = float(np.abs(judged["mixed"]["quality"] - judged["float32"]["quality"]).max())
    print(f"mixed vs float32 on {len(crops)} crops: top-1 identical {same_top1:.2%} (target >= 99.9 %), "
          f"largest quality difference {quality_gap:.4f} (target <= 0.01)")  # fmt: skip
    return same_top1, quality_gap


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def chosen_corruptions(text: str) -> tuple[str, ...]:
    if not text:
        return CORRUPTIONS
    if text in SELECTIONS:
        return corruption_names(text)
    return tuple(text.split(","))


def _plan(conds: tuple, on_device: bool = False) -> CropPlan:
    return CropPlan(
        conds, crop=CROP, seed=0, policy=DecodePolicy(), distort_on="device" if on_device else "workers"
    )


def _judge_in_batches(judges: Judges, crops: torch.Tensor, labels: torch.Tensor, n: int) -> None:
    """The judges on ``crops`` in calls of ``judges.batch_size`` crops (whole images), as evaluate calls them."""
    step = max(1, judges.batch_size // n) * n
    for start in range(0, len(crops), step):
        part = crops[start : start + step]
        clean = torch.arange(len(part)) // n * n
        judges(part, labels[start : start + step], clean)


def bare_loop(records: list[dict], conds: tuple, judges: Judges, device: str) -> float:
    """Seconds for the same work in one plain loop: per batch of images, decode, distort and crop each, then
    judge the batch's crops (the batch size evaluate uses)."""
    n = len(conds)
    per_call = max(1, judges.batch_size // n)
    sync(device)
    start = time.perf_counter()
    for first in range(0, len(records), per_call):
        batch = records[first : first + per_call]
        crops = torch.cat([image_crops(r["path"], _plan(conds), r["image_id"]).crops for r in batch])
        labels = torch.tensor([judges.index[r["label"]] for r in batch]).repeat_interleave(n)
        _judge_in_batches(judges, crops, labels, n)
    sync(device)
    return time.perf_counter() - start


def models_only(records: list[dict], conds: tuple, judges: Judges, device: str) -> float:
    """Seconds for the judges alone on crops prepared beforehand, at the same batch size."""
    n = len(conds)
    crops = torch.cat([image_crops(r["path"], _plan(conds), r["image_id"]).crops for r in records])
    labels = torch.tensor([judges.index[r["label"]] for r in records]).repeat_interleave(n)
    sync(device)
    start = time.perf_counter()
    _judge_in_batches(judges, crops, labels, n)
    sync(device)
    return time.perf_counter() - start


def pipeline_loop(
    records: list[dict], conds: tuple, judges: Judges, device: str, workers: int, on_device: bool = False
) -> float:
    start = time.perf_counter()
    rows = list(evaluate_records(records, judges, _plan(conds, on_device), Runtime(workers=workers)))
    sync(device)
    assert len(rows) == len(records) * len(conds) and all(r["status"] == "ok" for r in rows)
    return time.perf_counter() - start


def memory_child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: evaluate ``n`` images, print peak memory (MiB) as JSON."""
    records = make_images(Path(args.folder), args.n)
    conds = conditions(CORRUPTIONS, (1, 2))[: args.n_conditions]
    judges = make_judges(args.device, args.batch, load_quality_model("piqe", device=args.device))
    plan = CropPlan(conds, crop=args.crop, seed=0, policy=DecodePolicy())
    rows = 0
    for _ in evaluate_records(records, judges, plan, Runtime(workers=args.workers)):
        rows += 1  # rows are consumed as they come, like a shard being written
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"n": args.n, "rows": rows, "main_mib": main, "worker_mib": children}))


def memory(args: argparse.Namespace, folder: Path) -> float:
    """Peak memory on 200 and 2,000 images, each in a fresh process; returns the worker ratio."""
    results = []
    for n in (200, 2000):
        make_images(folder, n)  # made beforehand so file writing is not measured
        command = [sys.executable, __file__, "--child", str(folder), str(n), str(args.memory_conditions)]
        command += ["--device", args.device, "--workers", str(args.workers), "--batch", str(args.batch)]
        command += ["--crop", str(args.memory_crop)]
        start = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append({**json.loads(out.strip().splitlines()[-1]), "seconds": time.perf_counter() - start})
    small, large = results
    for r in results:
        print(
            f"memory: {r['n']:5d} images x {args.memory_conditions} conditions, crop {args.memory_crop}: main "
            f"{r['main_mib']:.0f} MiB, largest worker {r['worker_mib']:.0f} MiB ({r['seconds']:.0f} s)"
        )
    worker = large["worker_mib"] / small["worker_mib"]
    print(
        f"memory ratio 2000/200: main {large['main_mib'] / small['main_mib']:.2f}x, "
        f"worker {worker:.2f}x (target <= 1.5x)"
    )
    return worker


def spread(seconds: list[float], work: int) -> str:
    """Median rate and the min-max range of the repeats."""
    rates = sorted(work / t for t in seconds)
    return f"{statistics.median(rates):7.1f} image-conditions/s (range {rates[0]:.1f}-{rates[-1]:.1f})"


def throughput(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    """Interleaved repeats of the bare loop and the pipeline; returns the ratio of their medians and the
    pipeline's median rate (image-conditions per second)."""
    records = make_images(folder, args.n)
    conds = conditions(chosen_corruptions(args.corruptions), (1, 2))
    judges = make_judges(
        args.device, args.batch, quality_model(args.iqa, args.device, folder), args.precision
    )
    on_device = args.distort_on == "device"
    bare_loop(records[:8], conds, judges, args.device)  # warm-up of both (decoders, kernels, workers' start)
    pipeline_loop(records[:8], conds, judges, args.device, args.workers, on_device)
    bare, piped = [], []
    for _ in range(args.repeat):
        bare.append(bare_loop(records, conds, judges, args.device))
        piped.append(pipeline_loop(records, conds, judges, args.device, args.workers, on_device))
    models = models_only(records, conds, judges, args.device)
    total = len(records) * len(conds)
    print(
        f"device {args.device}, torch threads {torch.get_num_threads()}, workers {args.workers}, batch "
        f"{args.batch} crops, distortions in the {'main process on the device' if on_device else 'loader workers'}"
        f", judges ResNet-18 and {args.iqa}, precision {args.precision}"
    )
    print(f"{len(records)} images x {len(conds)} conditions = {total} image-conditions, crop {CROP}, "
          f"{args.repeat} interleaved repeats (median, min-max)")  # fmt: skip
    print(f"bare loop (decode, distort, crop, models; one loop): {spread(bare, total)}")
    print(f"evaluate (the same in loader workers + shard loop):   {spread(piped, total)}")
    print(f"models alone on prepared crops (the bound):          {total / models:7.1f} image-conditions/s")
    ratios = sorted(b / p for b, p in zip(bare, piped, strict=True))
    ratio = statistics.median(bare) / statistics.median(piped)
    print(f"ratio pipeline/bare: {ratio:.2f} (per repeat {ratios[0]:.2f}-{ratios[-1]:.2f}; target >= 0.75)")
    return ratio, total / statistics.median(piped)


def _child_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("n", type=int)
    parser.add_argument("n_conditions", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--crop", type=int, default=CROP)
    return parser.parse_args(sys.argv[2:])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        memory_child(_child_args())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images for the throughput comparison (default 48)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the pipeline (default 2)")
    parser.add_argument("--batch", type=int, default=64, help="crops per forward pass (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved timed runs of each (default 3)")
    parser.add_argument("--memory-conditions", type=int, default=2, help="conditions in the memory runs")
    parser.add_argument("--memory-crop", type=int, default=112, help="crop of the memory runs (default 112)")
    parser.add_argument(
        "--corruptions",
        default="",
        help='"all", "common", a family or comma-separated names (default: the four)',
    )
    parser.add_argument("--distort-on", choices=("workers", "device"), default="workers")
    parser.add_argument("--iqa", default="piqe", help="the quality model judging the crops (default piqe)")
    parser.add_argument("--precision", choices=("float32", "mixed"), default="float32")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    if args.repeat < 3:
        parser.error("--repeat must be at least 3 (a median of fewer says little)")

    headlines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        if not args.memory_only:
            if runs_mixed(args.precision, args.device):
                records = make_images(folder, min(args.n, 32))
                conds = conditions(chosen_corruptions(args.corruptions), (1, 2))
                same, gap = precision_check(records, conds, args.device, args.batch, args.iqa, folder)
                headlines.append(
                    headline("bench_evaluate", "mixed_top1_identical", same, ">=0.999", same >= 0.999)
                )
                if args.iqa not in RANDOM_JUDGE:  # random weights put every quality at the floor: no test
                    headlines.append(
                        headline("bench_evaluate", "mixed_quality_max_diff", gap, "<=0.01", gap <= 0.01)
                    )
            ratio, rate = throughput(args, folder)
            headlines.append(headline("bench_evaluate", "pipeline_over_bare", ratio, ">=0.75", ratio >= 0.75))
            if args.device.startswith("cuda"):
                headlines.append(
                    headline("bench_evaluate", "image_conditions_per_s", rate, ">=1500", rate >= 1500)
                )
        if not args.skip_memory:
            worker = memory(args, folder)
            headlines.append(
                headline("bench_evaluate", "worker_memory_2000_over_200", worker, "<=1.5", worker <= 1.5)
            )
    for line in headlines:
        print(line)


if __name__ == "__main__":
    main()
