"""Throughput of stage evaluate against a bare model loop, and its peak memory on 200 vs 2,000 images.

Throughput: image-conditions per second of the evaluate stage's own loop (decoding, distortion and cropping
in loader workers, overlapped with the models) against a bare loop that only runs the classifier and the
quality model (and the PSNR / MS-SSIM of each crop against its clean crop) on crops prepared beforehand --
same images, same conditions, same models, same run.
Target: the pipeline reaches at least 0.75 of the bare loop.

Memory: the same loop on 200 and on 2,000 images, each in a fresh process; peak resident memory of the
main process and of the largest loader worker. Target: 2,000 within 1.5x of 200 (streaming).

    python benchmarks/bench_evaluate.py --n 48 --device cpu
    python benchmarks/bench_evaluate.py --memory-only --memory-conditions 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saliqa.classify.models import build_classifier
from saliqa.corrupt import SELECTIONS, corruption_names
from saliqa.images import DecodePolicy, read_image
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.crops import image_crops
from saliqa.pipeline.evaluation import evaluate_records
from saliqa.pipeline.models import Judges
from saliqa.pipeline.plan import CropPlan, Runtime, conditions

HEIGHT, WIDTH, CROP = 375, 500, 224
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


def make_judges(device: str, batch_size: int) -> Judges:
    classes = [f"c{k}" for k in range(10)]
    model = build_classifier("p2p-resnet18", len(classes), seed=0).to(device).eval()
    return Judges(model, classes, load_quality_model("piqe", device=device), batch_size)


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


def bare_loop(records: list[dict], conds: tuple, judges: Judges, device: str) -> float:
    """Seconds for the models alone on crops prepared (decoded, distorted, cropped) beforehand."""
    crops = torch.cat([image_crops(r["path"], _plan(conds), r["image_id"]).crops for r in records])
    labels = torch.tensor([judges.index[r["label"]] for r in records]).repeat_interleave(len(conds))
    clean = torch.arange(len(crops)) // len(conds) * len(conds)
    sync(device)
    start = time.perf_counter()
    judges(crops, labels, clean)
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


def memory_child(folder: str, n: int, n_conditions: int, device: str, workers: int, batch: int) -> None:
    """Runs in a fresh process: evaluate ``n`` images, print peak memory (MiB) as JSON."""
    records = make_images(Path(folder), n)
    conds = conditions(CORRUPTIONS, (1, 2))[:n_conditions]
    judges = make_judges(device, batch)
    rows = 0
    for _ in evaluate_records(records, judges, _plan(conds), Runtime(workers=workers)):
        rows += 1  # rows are consumed as they come, like a shard being written
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"n": n, "rows": rows, "main_mib": main, "worker_mib": children}))


def memory(args: argparse.Namespace, folder: Path) -> None:
    results = []
    for n in (200, 2000):
        make_images(folder, n)  # made beforehand so file writing is not measured
        command = [sys.executable, __file__, "--child", str(folder), str(n), str(args.memory_conditions)]
        command += ["--device", args.device, "--workers", str(args.workers), "--batch", str(args.batch)]
        start = time.perf_counter()
        out = (
            subprocess.run(command, check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        results.append({**json.loads(out), "seconds": time.perf_counter() - start})
    small, large = results
    for r in results:
        print(
            f"memory: {r['n']:5d} images x {args.memory_conditions} conditions: main {r['main_mib']:.0f} MiB, "
            f"largest worker {r['worker_mib']:.0f} MiB ({r['seconds']:.0f} s)"
        )
    print(
        f"memory ratio 2000/200: main {large['main_mib'] / small['main_mib']:.2f}x, "
        f"worker {large['worker_mib'] / small['worker_mib']:.2f}x (target <= 1.5x)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        parser = argparse.ArgumentParser()
        parser.add_argument("folder")
        parser.add_argument("n", type=int)
        parser.add_argument("n_conditions", type=int)
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--batch", type=int, default=64)
        a = parser.parse_args(sys.argv[2:])
        memory_child(a.folder, a.n, a.n_conditions, a.device, a.workers, a.batch)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images for the throughput comparison (default 48)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the pipeline (default 2)")
    parser.add_argument("--batch", type=int, default=64, help="crops per forward pass (default 64)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each; the best is reported")
    parser.add_argument("--memory-conditions", type=int, default=2, help="conditions in the memory runs")
    parser.add_argument(
        "--corruptions",
        default="",
        help='"all", "common", a family or comma-separated names (default: the four)',
    )
    parser.add_argument("--distort-on", choices=("workers", "device"), default="workers")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        if not args.memory_only:
            records = make_images(folder, args.n)
            conds = conditions(chosen_corruptions(args.corruptions), (1, 2))
            judges = make_judges(args.device, args.batch)
            read_image(records[0]["path"])
            on_device = args.distort_on == "device"
            pipeline_loop(records[:4], conds, judges, args.device, args.workers, on_device)  # warm-up
            bare = min(bare_loop(records, conds, judges, args.device) for _ in range(args.repeat))
            piped = min(
                pipeline_loop(records, conds, judges, args.device, args.workers, on_device)
                for _ in range(args.repeat)
            )
            total = len(records) * len(conds)
            print(
                f"device {args.device}, torch threads {torch.get_num_threads()}, workers {args.workers}, "
                f"distortions in the {'main process on the device' if on_device else 'loader workers'}"
            )
            print(f"{len(records)} images x {len(conds)} conditions = {total} image-conditions, crop {CROP}")
            print(f"bare loop (models only, crops prepared): {total / bare:7.1f} image-conditions/s")
            print(f"evaluate (decode, distort, crop, models): {total / piped:7.1f} image-conditions/s")
            print(f"ratio pipeline/bare: {bare / piped:.2f} (target >= 0.75)")
        if not args.skip_memory:
            memory(args, folder)


if __name__ == "__main__":
    main()
