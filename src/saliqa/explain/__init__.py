"""Attribution maps and how far they agree with quality maps; imports nothing from the pipeline."""

from saliqa.explain.attribution import CAM_METHODS, attribute, attribution_methods, degenerate

__all__ = ["CAM_METHODS", "attribute", "attribution_methods", "degenerate"]
