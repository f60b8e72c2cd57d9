"""The stages of a run, in order. Adding a stage is one module here and one entry in :data:`STAGES`."""

from __future__ import annotations

from saliqa.pipeline.stages.evaluate import EVALUATE
from saliqa.pipeline.stages.explain import EXPLAIN
from saliqa.pipeline.stages.rate import RATE
from saliqa.pipeline.stages.report import REPORT
from saliqa.pipeline.stages.split import SPLIT
from saliqa.pipeline.stages.train import TRAIN

STAGES = (RATE, SPLIT, TRAIN, EVALUATE, EXPLAIN, REPORT)
"""Every stage, in the order a run takes them."""

__all__ = ["STAGES"]
