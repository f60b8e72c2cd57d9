"""saliqa: when an image is distorted, does a classifier lose its way where a quality judge sees the damage?

The Python API mirrors the CLI::

    import saliqa
    image = saliqa.read_image("photo.jpg")                  # (H, W, 3) uint8 RGB, or ImageRejected
    model = saliqa.load_quality_model("piqe")               # a QualityModel
    out = model(saliqa.to_batch([image]))                   # score, quality, category, patch map
    ratings = saliqa.rate(["photos/"], out="rated")         # ratings.parquet + quality_maps/
    saliqa.run_pipeline(saliqa.load_config("run.toml"), "runs/mine")
    dark = saliqa.corrupt(image, "brightness", 2)            # ImageNet-C corruptions, uint8 in and out
    plan = saliqa.CropPlan(saliqa.conditions(("fog",), (3,)), crop=224, seed=0)
    crops = saliqa.image_crops("photo.jpg", plan, "photo.jpg").crops   # the crops evaluate judges
    classifier, info = saliqa.classifier_from_checkpoint("runs/mine/model/best.pt")
    check = saliqa.validate_quality_model("clive", "niqe", root="ChallengeDB_release")  # agreement with MOS
"""

from saliqa.api import collect_images, iter_ratings, rate
from saliqa.classify.checkpoint import classifier_from_checkpoint
from saliqa.classify.models import build_classifier
from saliqa.config import RunConfig, load_config
from saliqa.corrupt import corrupt, corrupt_batch, corruption_names
from saliqa.data.readers import ImageTable, open_dataset, read_folder, read_manifest, read_mit67
from saliqa.data.split import quality_split
from saliqa.errors import (
    AttributionError,
    CheckpointError,
    ConfigError,
    CorruptionError,
    DatasetError,
    ImageRejected,
    SaliqaError,
    UnknownModelError,
    WeightsNotFoundError,
)
from saliqa.explain import attribute, attribution_methods, map_similarity, similarity_metrics
from saliqa.images import DecodePolicy, decode_image, read_image, to_batch, to_tensor
from saliqa.io.tables import read_provenance
from saliqa.iqa.base import PatchGrid, QualityModel, QualityOutput
from saliqa.iqa.categories import CATEGORIES
from saliqa.iqa.registry import load_quality_model, quality_model_names
from saliqa.pipeline.crops import ImageCrops, image_crops
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.mapstore import MapStore
from saliqa.pipeline.plan import CropPlan, conditions
from saliqa.pipeline.run import run_pipeline
from saliqa.pipeline.validate_iqa import validate_quality_model
from saliqa.stats import summarize_eval

__version__ = "0.1.0"

__all__ = [
    "CATEGORIES",
    "AttributionError",
    "CheckpointError",
    "ConfigError",
    "CorruptionError",
    "CropPlan",
    "DatasetError",
    "DecodePolicy",
    "ImageCrops",
    "ImageRejected",
    "ImageTable",
    "MapStore",
    "PatchGrid",
    "QualityModel",
    "QualityOutput",
    "RunConfig",
    "RunLayout",
    "SaliqaError",
    "UnknownModelError",
    "WeightsNotFoundError",
    "attribute",
    "attribution_methods",
    "build_classifier",
    "classifier_from_checkpoint",
    "collect_images",
    "conditions",
    "corrupt",
    "corrupt_batch",
    "corruption_names",
    "decode_image",
    "image_crops",
    "iter_ratings",
    "load_config",
    "load_quality_model",
    "map_similarity",
    "open_dataset",
    "quality_model_names",
    "quality_split",
    "rate",
    "read_folder",
    "read_image",
    "read_manifest",
    "read_mit67",
    "read_provenance",
    "run_pipeline",
    "similarity_metrics",
    "summarize_eval",
    "to_batch",
    "to_tensor",
    "validate_quality_model",
]
