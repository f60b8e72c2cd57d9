"""The tables of a run, each declared once: columns, types and what a row means.

Writers build rows with :meth:`TableSchema.row` and frames with :meth:`TableSchema.frame`, readers read with
:meth:`TableSchema.read`, and an empty table comes from :meth:`TableSchema.empty`, so the columns and dtypes
of ``ratings.parquet`` and ``eval.parquet`` have one source. The README's table lists the same columns (a test
checks it).
"""

from __future__ import annotations

import pyarrow as pa

from saliqa.io.tables import TableSchema

RATINGS = TableSchema(
    "ratings.parquet",
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("iqa", pa.string()),
        ("score", pa.float64()),
        ("quality", pa.float64()),
        ("category", pa.string()),
    ],
)
"""One row per listed image. ``status`` is ok, missing, rejected or failed; ``reason`` says why (or notes what
was done to an ok image, e.g. a downscale)."""

EVAL = TableSchema(
    "eval.parquet",
    [
        ("image_id", pa.string()),
        ("label", pa.string()),
        ("corruption", pa.string()),
        ("severity", pa.int64()),
        ("pred", pa.string()),
        ("top1", pa.bool_()),
        ("top5", pa.bool_()),
        ("prob_true", pa.float64()),
        ("score", pa.float64()),
        ("quality", pa.float64()),
        ("psnr", pa.float64()),
        ("ms_ssim", pa.float64()),
        ("set", pa.string()),
        ("upscaled", pa.bool_()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ],
)
"""One row per evaluation image and condition: the contract's ten columns; PSNR (dB, +inf when unchanged) and
MS-SSIM of the crop against the same image's clean crop (NaN for crops under 161 pixels, too small for five
scales); the evaluation set (``val`` or an extra set's name); whether the image was upscaled to reach the crop
size; and ``status``/``reason`` (ok, missing, rejected, skipped, failed) so that no image is silently left
out."""

MAPS_INDEX = TableSchema(
    "maps/index.parquet",
    [
        ("set", pa.string()),
        ("image_id", pa.string()),
        ("label", pa.string()),
        ("corruption", pa.string()),
        ("severity", pa.int64()),
        ("target", pa.string()),
        ("pred", pa.string()),
        ("quality", pa.float64()),
        ("grid", pa.string()),
        ("degenerate", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ],
)
"""One row per explained image and condition: the class the maps explain (``target``), the prediction and
picture quality of that crop, the comparison grid, the methods whose map was degenerate there (all zero or
constant: their comparisons are NaN), and ``status``/``reason``. The maps themselves are in ``maps/*.npz``."""

COMPARE = TableSchema(
    "compare.parquet",
    [
        ("image_id", pa.string()),
        ("set", pa.string()),
        ("corruption", pa.string()),
        ("severity", pa.int64()),
        ("method", pa.string()),
        ("reference", pa.string()),
        ("metric", pa.string()),
        ("grid", pa.string()),
        ("value", pa.float64()),
    ],
)
"""One row per image, condition, map (an attribution method or a ``baseline:...``), reference map (quality,
damage, quality_gradcam, quality_change) and metric."""

COMPARE_SUMMARY = TableSchema(
    "compare_summary.parquet",
    [
        ("set", pa.string()),
        ("corruption", pa.string()),
        ("severity", pa.int64()),
        ("method", pa.string()),
        ("reference", pa.string()),
        ("metric", pa.string()),
        ("grid", pa.string()),
        ("n", pa.int64()),
        ("mean", pa.float64()),
        ("lo", pa.float64()),
        ("hi", pa.float64()),
        ("centre", pa.float64()),
        ("sobel", pa.float64()),
        ("random", pa.float64()),
        ("shuffled", pa.float64()),
        ("note", pa.string()),
    ],
)
"""Mean over images with its 95 % bootstrap interval (``n`` images with a finite value) per set, condition,
method, reference and metric; on each method's row the baselines' means for the same comparison."""

SANITY = TableSchema(
    "sanity.parquet",
    [
        ("method", pa.string()),
        ("step", pa.int64()),
        ("layer", pa.string()),
        ("metric", pa.string()),
        ("n", pa.int64()),
        ("mean", pa.float64()),
        ("lo", pa.float64()),
        ("hi", pa.float64()),
    ],
)
"""The cascading randomisation test: after ``step`` blocks from the top were re-initialised (``layer`` the
last one; step 0 is the trained model), the similarity of the maps to the trained model's."""

STATS = TableSchema(
    "stats.parquet",
    [
        ("statistic", pa.string()),
        ("set", pa.string()),
        ("corruption", pa.string()),
        ("severity", pa.int64()),
        ("n", pa.int64()),
        ("value", pa.float64()),
        ("lo", pa.float64()),
        ("hi", pa.float64()),
    ],
)
"""Statistics across conditions and images with 95 % bootstrap intervals over images (``corruption`` "all":
over every condition)."""
