"""Attribution maps and how far they agree with quality maps; imports nothing from the pipeline."""

from saliqa.explain.attribution import CAM_METHODS, attribute, attribution_methods, degenerate
from saliqa.explain.similarity import DEFAULT_METRICS, map_similarity, overlap_resample, similarity_metrics

__all__ = [
    "CAM_METHODS",
    "DEFAULT_METRICS",
    "attribute",
    "attribution_methods",
    "degenerate",
    "map_similarity",
    "overlap_resample",
    "similarity_metrics",
]
