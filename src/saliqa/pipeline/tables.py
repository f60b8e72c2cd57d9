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
