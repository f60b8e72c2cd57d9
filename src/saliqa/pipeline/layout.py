"""Where every artifact of a run lives: the one place a run directory's paths are named.

Stages, the runner, the figures they draw and the tests all take paths from a :class:`RunLayout`; nothing
else spells a file name of the run directory. Names are POSIX paths relative to the run directory (what the
stage records store); the properties give absolute paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saliqa.classify.train import BEST, LAST, LOG


@dataclass(frozen=True)
class RunLayout:
    """The artifact paths of the run directory ``root``."""

    root: Path

    # -- names (relative to the run directory) ---------------------------------------------------------------
    CONFIG = "config.toml"
    RUN_RECORD = "run.json"
    STAGE_RECORDS = "stages"
    LOCK = ".saliqa.lock"
    FILE_HASHES = "stages/file_hashes.json"
    DEMO_DATA = "data/demo"
    FIGURES = "figures"

    RATINGS = "ratings.parquet"
    QUALITY_MAPS = "quality_maps"
    RATINGS_PARTS = "ratings.parts"
    QUALITY_HISTOGRAM = "figures/quality_histogram.png"
    CATEGORY_COUNTS = "figures/category_counts.png"

    SPLIT = "split.parquet"

    MODEL = "model"
    BEST = f"model/{BEST}"
    LAST = f"model/{LAST}"
    TRAIN_LOG = f"model/{LOG}"
    TRAINING_CURVES = "figures/training_curves.png"

    EVAL = "eval.parquet"
    EVAL_PARTS = "eval.parts"
    SUMMARY = "summary.parquet"
    ROBUSTNESS = "robustness.parquet"
    EVAL_OVERVIEW = "figures/eval_overview.png"
    EVAL_HEATMAP = "figures/eval_heatmap.png"

    REPORT = "report.html"
    REPORT_MD = "report.md"

    MAPS = "maps"
    MAPS_INDEX = "maps/index.parquet"
    EXPLAIN_PARTS = "explain.parts"
    COMPARE = "compare.parquet"
    COMPARE_SUMMARY = "compare_summary.parquet"
    SANITY = "sanity.parquet"
    STATS = "stats.parquet"
    EXPLAIN_SANITY = "figures/explain_sanity.png"
    EXPLAIN_CHANGE = "figures/explain_change.png"
    EXPLAIN_PANELS = "figures/explain_panels.png"

    @staticmethod
    def classifier(checkpoint: str, evaluating_as_is: bool) -> str:
        """The checkpoint evaluate and explain use: ``best`` or ``last`` of the training, or the one file a
        model evaluated as it is was written to."""
        return RunLayout.BEST if evaluating_as_is or checkpoint == "best" else RunLayout.LAST

    @staticmethod
    def explain_curves(corruption: str, eval_set: str = "val") -> str:
        """Agreement with the quality and damage maps against severity, baselines dashed."""
        suffix = "" if eval_set == "val" else f"_{eval_set}"
        return f"figures/explain_{corruption}{suffix}.png"

    @staticmethod
    def eval_curves(corruption: str) -> str:
        """Top-1, Top-5 and mean quality against severity of one corruption."""
        return f"figures/eval_{corruption}.png"

    @staticmethod
    def eval_overview(eval_set: str = "val") -> str:
        return RunLayout.EVAL_OVERVIEW if eval_set == "val" else f"figures/eval_overview_{eval_set}.png"

    @staticmethod
    def eval_heatmap(eval_set: str = "val") -> str:
        return RunLayout.EVAL_HEATMAP if eval_set == "val" else f"figures/eval_heatmap_{eval_set}.png"

    @staticmethod
    def with_twins(names: tuple[str, ...] | list[str]) -> list[str]:
        """``names`` with the SVG twin after each figure's PNG (every figure is written in both formats)."""
        out: list[str] = []
        for name in names:
            out.append(name)
            if name.startswith(f"{RunLayout.FIGURES}/") and name.endswith(".png"):
                out.append(name[: -len(".png")] + ".svg")
        return out

    @staticmethod
    def stage_record(stage: str) -> str:
        return f"stages/{stage}.json"

    def path(self, name: str) -> Path:
        """The absolute path of the artifact ``name`` (one of the names above)."""
        return self.root.joinpath(*name.split("/"))

    def name(self, path: Path) -> str:
        """The artifact name (relative POSIX path) of ``path`` inside the run directory."""
        return path.relative_to(self.root).as_posix()

    @property
    def ratings(self) -> Path:
        return self.path(self.RATINGS)

    @property
    def quality_maps(self) -> Path:
        return self.path(self.QUALITY_MAPS)

    @property
    def split(self) -> Path:
        return self.path(self.SPLIT)

    @property
    def model(self) -> Path:
        return self.path(self.MODEL)

    @property
    def eval(self) -> Path:
        return self.path(self.EVAL)

    @property
    def summary(self) -> Path:
        return self.path(self.SUMMARY)
