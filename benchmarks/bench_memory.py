"""Peak memory that does not grow with the dataset.

Part 1, tables: a synthetic ``eval.parquet`` of 5,000,064 rows (52,084 images x 96 conditions: clean and the
19 corruptions at severities 1-5; the EVAL schema, row groups of one 512-image shard each, 1 % of images
failed) is summarised (``summary.parquet``'s numbers) and scored (CE against itself and against AlexNet), each
in a fresh process whose peak resident memory (VmHWM) is read. Baseline in the same run: the old way, the
whole table read into pandas and then summarised. Target: the streamed summary under 1 GB.

The bootstrap's memory is capped (``saliqa.stats._MAX_INDICES``) and the cap is reached from 39 resamples on
52,000 images, so ``--boot 160`` measures the peak of the default 1,000 resamples in a sixth of the time.

Part 2, stages: rate, evaluate and explain on a generated folder of small images (``--small`` and
``--large`` images, 64x64 pixels, 3 classes, PIQE, crop 48, two conditions, one epoch of training, explain
with Grad-CAM on a fixed sample), each stage run in a fresh process; the peak resident memory of the stage's
process and of its largest loader worker. Target: the large folder within 1.2x of the small one.

    python benchmarks/bench_memory.py                       # both parts
    python benchmarks/bench_memory.py --tables-only --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from headline import headline
from PIL import Image

from saliqa.corrupt import corruption_names
from saliqa.pipeline.plan import conditions
from saliqa.pipeline.tables import EVAL

CONDITIONS = conditions(corruption_names("all"), (1, 2, 3, 4, 5))
SHARD_IMAGES = 512
TABLE_TARGET_MIB = 1024
FLAT_TARGET = 1.2


def _shard(first: int, n: int, rng: np.random.Generator) -> pa.Table:
    """Rows of images ``first .. first + n`` under every condition, image by image, as evaluate writes them."""
    k = len(CONDITIONS)
    image = np.repeat(np.arange(first, first + n), k)
    corruption = np.tile(np.array([c for c, _ in CONDITIONS]), n)
    severity = np.tile(np.array([s for _, s in CONDITIONS], dtype=np.int64), n)
    ok = np.repeat(rng.random(n) >= 0.01, k)
    labels = np.array([f"class{i % 67:02d}" for i in image])
    top1 = rng.random(len(image)) < 0.8 - 0.08 * severity
    top5 = top1 | (rng.random(len(image)) < 0.5)
    clean = severity == 0

    def masked(values: np.ndarray) -> pa.Array:
        return pa.array(values, mask=~ok)

    columns = {
        "image_id": pa.array([f"img{i:07d}.jpg" for i in image]),
        "label": pa.array(labels),
        "corruption": pa.array(corruption),
        "severity": pa.array(severity),
        "pred": masked(np.where(top1, labels, "class99")),
        "top1": masked(top1),
        "top5": masked(top5),
        "prob_true": pa.array(np.where(ok, rng.random(len(image)), np.nan)),
        "score": pa.array(np.where(ok, rng.normal(40, 10, len(image)), np.nan)),
        "quality": pa.array(np.where(ok, rng.uniform(20, 90, len(image)), np.nan)),
        "psnr": pa.array(np.where(ok, np.where(clean, np.inf, rng.uniform(15, 40, len(image))), np.nan)),
        "ms_ssim": pa.array(np.where(ok, np.where(clean, 1.0, rng.uniform(0.3, 1.0, len(image))), np.nan)),
        "set": pa.array(np.full(len(image), "val")),
        "upscaled": masked(np.zeros(len(image), dtype=bool)),
        "status": pa.array(np.where(ok, "ok", "failed")),
        "reason": pa.array(np.where(ok, None, "decode error: synthetic")),
    }
    return pa.table(columns, schema=EVAL.arrow)


def write_eval_table(path: Path, rows: int, seed: int = 0) -> int:
    """A synthetic eval table of at least ``rows`` rows at ``path``; returns its number of rows."""
    images = math.ceil(rows / len(CONDITIONS))
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, EVAL.arrow) as writer:
        for first in range(0, images, SHARD_IMAGES):
            writer.write_table(_shard(first, min(SHARD_IMAGES, images - first), rng))
    return images * len(CONDITIONS)


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table_child(kind: str, path: str, boot: int) -> None:
    """Runs in a fresh process: one way of making the summary and robustness scores; prints its peak."""
    from saliqa.robustness import corruption_errors
    from saliqa.stats import summarize_eval, summarize_eval_file

    imports = peak_mib()
    start = time.perf_counter()
    if kind == "streamed":
        summary = summarize_eval_file(path, seed=0, n_boot=boot)
        scores = [corruption_errors(path, path), corruption_errors(path)]
    else:  # the old way: the whole table in pandas, then the same computations on the frame
        table = EVAL.read(path)
        summary = summarize_eval(table, seed=0, n_boot=boot)
        scores = [corruption_errors(table, table), corruption_errors(table)]
    digest = float(summary["top1_lo"].sum() + sum(s["ce"].sum() for s in scores))
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mib": peak_mib(), "imports_mib": imports, "seconds": seconds, "digest": digest}))


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def tables(args: argparse.Namespace, folder: Path) -> float:
    """Part 1; returns the streamed summary's peak (MiB)."""
    path = folder / "eval.parquet"
    start = time.perf_counter()
    rows = write_eval_table(path, args.rows)
    print(f"synthetic eval.parquet: {rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB on disk, "
          f"{pq.ParquetFile(path).num_row_groups} row groups ({time.perf_counter() - start:.0f} s to write)")  # fmt: skip
    results = {
        kind: run_child("--table-child", kind, str(path), str(args.boot)) for kind in ("streamed", "whole")
    }
    same = results["streamed"]["digest"] == results["whole"]["digest"]
    for kind, r in results.items():
        print(f"summary + robustness, {kind:8s}: peak {r['peak_mib']:6.0f} MiB ({r['imports_mib']:.0f} MiB of it "
              f"the imports: torch, pandas, saliqa), {r['seconds']:5.0f} s")  # fmt: skip
    print(f"same numbers both ways: {'yes' if same else 'NO'}; n_boot {args.boot}; target: streamed < "
          f"{TABLE_TARGET_MIB} MiB")  # fmt: skip
    return results["streamed"]["peak_mib"] if same else float("inf")


def stage_child(root: str, until: str) -> None:
    """Runs in a fresh process: the pipeline up to ``until`` (earlier stages already done); prints peaks."""
    from saliqa.pipeline.run import run_pipeline

    run_pipeline(stage_config(Path(root)), Path(root) / "run", until=until, progress=False)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak_mib(), "worker_mib": workers}))


def stage_config(root: Path):
    from saliqa.config import config_from_dict

    return config_from_dict(
        {
            "data": {"source": "folder", "root": str(root / "data")},
            "rate": {"device": "cpu", "workers": 2},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.5},
            "train": {"epochs": 1, "batch_size": 32, "image_size": 48, "workers": 0, "device": "cpu"},
            "evaluate": {"corruptions": ["contrast"], "severities": [1], "crop": 48, "workers": 2,
                         "device": "cpu", "bootstrap": 200},
            "explain": {"methods": ["gradcam"], "sample": 16, "sanity": False, "panels": 0, "bootstrap": 200},
        }
    )  # fmt: skip


def make_folder(root: Path, n: int) -> None:
    """``n`` 64x64 PNG images in 3 class folders, smooth gradients with noise (fast to write and decode)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 64)
    for i in range(n):
        folder = root / "data" / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack(
            [
                np.add.outer(ramp, ramp) / 2,
                np.add.outer(ramp, ramp[::-1]) / 2,
                np.full((64, 64), 40.0 * (i % 3)),
            ],
            -1,
        )
        image = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"im{i:05d}.png")


def stages(args: argparse.Namespace, folder: Path) -> float:
    """Part 2; returns the largest large/small ratio of a stage's peak."""
    peaks: dict[int, dict[str, dict]] = {}
    for n in (args.small, args.large):
        root = folder / f"stages{n}"
        make_folder(root, n)
        peaks[n] = {}
        for stage in ("rate", "train", "evaluate", "explain"):
            start = time.perf_counter()
            result = run_child("--stage-child", str(root), stage)
            peaks[n][stage] = {**result, "seconds": time.perf_counter() - start}
    worst = 0.0
    for stage in ("rate", "evaluate", "explain"):
        small, large = peaks[args.small][stage], peaks[args.large][stage]
        ratio = max(large["peak_mib"] / small["peak_mib"], large["worker_mib"] / max(small["worker_mib"], 1))
        worst = max(worst, ratio)
        print(f"{stage:8s}: {args.small} images peak {small['peak_mib']:5.0f} MiB (workers {small['worker_mib']:4.0f}), "
              f"{args.large} images {large['peak_mib']:5.0f} MiB (workers {large['worker_mib']:4.0f}): {ratio:.2f}x "
              f"({small['seconds']:.0f} s, {large['seconds']:.0f} s)")  # fmt: skip
    print(f"largest ratio {worst:.2f}x (target <= {FLAT_TARGET}x)")
    return worst


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--table-child":
        table_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--stage-child":
        stage_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the synthetic eval table")
    parser.add_argument("--boot", type=int, default=160, help="bootstrap resamples (default 160, see above)")
    parser.add_argument("--small", type=int, default=1000, help="images of the small folder (default 1000)")
    parser.add_argument("--large", type=int, default=5000, help="images of the large folder (default 5000)")
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--stages-only", action="store_true")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the files (default: a temp dir)")
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if not args.stages_only:
            peak = tables(args, Path(tmp))
            ok = peak < TABLE_TARGET_MIB
            lines.append(
                headline("bench_memory", "summary_peak_mib_5M_rows", peak, f"<{TABLE_TARGET_MIB}", ok)
            )
        if not args.tables_only:
            worst = stages(args, Path(tmp))
            ok = worst <= FLAT_TARGET
            lines.append(
                headline("bench_memory", "stage_peak_large_over_small", worst, f"<={FLAT_TARGET}", ok)
            )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
