"""Scaling of stage evaluate on the Ray engine: 1 against 2 model workers, with the local engine beside them.

The demo's images (the embedded dataset's first ``--images``) under the clean condition and each chosen
corruption at each severity go through ``evaluate_to_dir`` -- the stage's own shard loop -- three ways, in
the same run and with the same judges (P2P-head ResNet-18 with seeded weights, PIQE, batches of ``--batch``
crops):

- local: the local engine, its loader workers (``--workers``) decoding and distorting ahead of the models;
- ray x1, ray x2: Ray Data on ``ray.init(num_cpus=--cpus)`` with 1 and 2 model actors of 1 CPU each.

``--costs`` first times the parts of one image-condition apart, single-threaded, on all 19 corruptions at
severity 3 (decode, distort and crop on the CPU; classifier + PIQE + PSNR/MS-SSIM per crop; the driver's
unpickling and rows per image), the inputs of the throughput model in ``docs/scaling.md``.

Each run starts from an empty run directory, so it includes what a stage pays: Ray's actors build their
models, the parts are written and merged. Runs are interleaved (local, ray x1, ray x2, local, ...) after one
warm-up of each (``benchmarks/headline.py``); the median of ``--repeat`` is printed with the range, in
image-conditions per second. Headline: ray x2 / ray x1 (target >= 1.5 on 2 cores). Nothing is asserted.

    python benchmarks/bench_scaling.py --images 32 --repeat 3 [--costs]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import ray
import torch
from headline import headline, interleaved, rate, spread

from saliqa.classify.checkpoint import save_checkpoint
from saliqa.classify.models import build_classifier
from saliqa.config import EngineConfig
from saliqa.corrupt import corruption_names
from saliqa.data.demo import build_demo
from saliqa.images import DecodePolicy
from saliqa.pipeline.crops import condition_crops, prepare_image, prepare_record
from saliqa.pipeline.evaluation import EvaluateWork, evaluate_to_dir
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.models import ClassifierSpec, JudgesSpec, QualitySpec
from saliqa.pipeline.plan import CropPlan, Runtime, conditions

TARGET = 1.5


def demo_records(root: Path, n: int) -> pd.DataFrame:
    files = sorted(root.glob("*/*.jpg"))[:: max(1, len(sorted(root.glob("*/*.jpg"))) // n)][:n]
    return pd.DataFrame(
        {
            "image_id": [f"{p.parent.name}/{p.name}" for p in files],
            "path": [str(p) for p in files],
            "label": [p.parent.name for p in files],
            "set": "val",
            "present": True,
            "reason": None,
        }
    )


def judges_spec(folder: Path, classes: list[str], batch: int) -> JudgesSpec:
    checkpoint = save_checkpoint(
        folder / "classifier.pt", build_classifier("p2p-resnet18", len(classes), seed=0), classes=classes
    )
    return JudgesSpec(ClassifierSpec.of(checkpoint, "cpu"), QualitySpec.find("piqe", "cpu"), batch)


def evaluate_call(
    records: pd.DataFrame, spec: JudgesSpec, plan: CropPlan, runtime: Runtime, folder: Path
) -> Callable[[], None]:
    """One whole evaluate into a fresh run directory, as a stage runs it (Ray's actors start in it)."""
    judges = spec.build()

    def call() -> None:
        with tempfile.TemporaryDirectory(dir=folder) as out:
            layout = RunLayout(Path(out))
            evaluate_to_dir(records, judges, plan, runtime, layout, {"fingerprint": "bench"}, spec)

    return call


def costs(records: pd.DataFrame, spec: JudgesSpec, batch: int) -> None:
    """Milliseconds of one thread per image (decode), per image-condition (distort + crop) and per crop
    (models), and the driver's per-image share, on the demo's images."""
    torch.set_num_threads(1)
    plan = CropPlan(conditions(corruption_names("all"), (3,)), crop=224, seed=0, policy=DecodePolicy())
    paths, ids = records["path"].tolist(), records["image_id"].tolist()
    start = time.perf_counter()
    images = [prepare_image(path, plan)[0] for path in paths]
    decode = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    crops = [condition_crops(image, plan, i) for image, i in zip(images, ids, strict=True)]
    distort = (time.perf_counter() - start) / (len(images) * (len(plan.conditions) - 1))
    judges = spec.build()
    work = EvaluateWork(judges, plan, Runtime(workers=0), [])
    head = records.head(2).to_dict("records")
    work.judge([prepare_record(0, head[0], plan)])  # warm-up
    items = [prepare_record(k, r, plan) for k, r in enumerate(head)]
    start = time.perf_counter()
    work.judge(items)
    model = (time.perf_counter() - start) / (len(items) * len(plan.conditions))
    start = time.perf_counter()
    for item in items:
        work.rows(pickle.loads(pickle.dumps(item)))
    driver = (time.perf_counter() - start) / len(items)
    n = len(plan.conditions)
    print(f"costs on one thread ({len(paths)} demo images, {n} conditions, crops {batch} per pass):")
    print(
        f"  decode + upscale  {decode * 1e3:7.2f} ms per image ({decode * 1e3 / n:.2f} per image-condition)"
    )
    print(f"  distort + crop    {distort * 1e3:7.2f} ms per image-condition (19 corruptions, severity 3)")
    print(f"  models + PSNR/MS-SSIM {model * 1e3:5.2f} ms per crop (P2P ResNet-18 + PIQE, CPU)")
    print(f"  driver            {driver * 1e3:7.2f} ms per image (unpickle, {n} rows)")
    del crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--corruptions", default="brightness,contrast,gaussian_noise,jpeg_compression")
    parser.add_argument("--severities", default="1,3,5")
    parser.add_argument("--batch", type=int, default=32, help="crops per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the local engine")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median), at least 3")
    parser.add_argument("--costs", action="store_true", help="time the parts of one image-condition first")
    args = parser.parse_args()

    conds = conditions(tuple(args.corruptions.split(",")), tuple(int(s) for s in args.severities.split(",")))
    plan = CropPlan(conds, crop=224, seed=0, policy=DecodePolicy())
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        records = demo_records(build_demo(folder / "demo"), args.images)
        spec = judges_spec(folder, sorted(set(records["label"])), args.batch)
        if args.costs:
            threads = torch.get_num_threads()
            costs(records, spec, args.batch)
            torch.set_num_threads(threads)
        shard = max(1, len(records) // 4)
        engines = {
            "local": Runtime(workers=args.workers, shard_size=shard, progress=False),
            "ray x1": Runtime(
                shard_size=shard, progress=False, engine=EngineConfig(kind="ray", model_workers=1)
            ),
            "ray x2": Runtime(
                shard_size=shard, progress=False, engine=EngineConfig(kind="ray", model_workers=2)
            ),
        }
        calls = {name: evaluate_call(records, spec, plan, rt, folder) for name, rt in engines.items()}
        seconds = interleaved(calls, args.repeat)
    total = len(records) * len(conds)
    print(f"{len(records)} demo images x {len(conds)} conditions = {total} image-conditions, crop 224")
    print(
        f"batches of {args.batch} crops; Ray on {args.cpus} CPUs, 1 per model actor; local: {args.workers} loaders"
    )
    for name, values in seconds.items():
        print(f"{name:<8} {spread(values, total, 'image-conditions/s')}")
    ratio = rate(seconds["ray x2"], total) / rate(seconds["ray x1"], total)
    print(
        f"ray x2 / ray x1: {ratio:.2f}x; ray x2 / local: {rate(seconds['ray x2'], total) / rate(seconds['local'], total):.2f}x"
    )
    print(headline("bench_scaling", "ray2_over_ray1", ratio, f">={TARGET}", ratio >= TARGET))


if __name__ == "__main__":
    main()
