"""How long the report takes to render, and how much it weighs, for a run with every corruption.

Builds a small run (scikit-image photos in 3 classes, one epoch) with all 19 corruptions at severities 1-5
(96 conditions) and the explain stage (Grad-CAM, 4 images per set, 8 example panels), then renders
``report.html`` from its artifacts ``--repeats`` times. Targets (printed, not asserted): under 10 s on a
2-core CPU, under 20 MB.

    python benchmarks/bench_report.py --out /tmp/bench_report
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from headline import headline

from saliqa.config import config_from_dict
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.run import run_pipeline
from saliqa.pipeline.stages.report import write_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_folder_dataset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_report"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = make_folder_dataset(args.out / "data", per_class=6, side=256)
    config = config_from_dict(
        {
            "data": {"source": "folder", "root": str(root)},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"], "val_fraction": 0.5},
            "train": {"epochs": 1, "batch_size": 8},
            "evaluate": {"corruptions": "all", "severities": [1, 2, 3, 4, 5], "bootstrap": 200},
            "explain": {"methods": ["gradcam"], "sample": 4, "sanity": False, "panels": 8, "bootstrap": 200},
        }
    )
    start = time.perf_counter()
    run_pipeline(config, args.out / "run", progress=False, until="explain")
    print(f"run with 96 conditions and explain: {time.perf_counter() - start:.0f} s (not part of the target)")
    layout = RunLayout(args.out / "run")
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        page = write_report(layout)
        times.append(time.perf_counter() - start)
    size = page.stat().st_size / 2**20
    figures = len(list(layout.path(RunLayout.FIGURES).glob("*.png")))
    print(f"report.html: best {min(times):.2f} s of {args.repeats} (target < 10 s), {size:.1f} MB (target < 20 MB), "
          f"{figures} figures embedded")  # fmt: skip
    print(headline("bench_report", "render_seconds", min(times), "<10", min(times) < 10))
    print(headline("bench_report", "page_mb", size, "<20", size < 20))


if __name__ == "__main__":
    main()
