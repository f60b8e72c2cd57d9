"""Datasets: readers that list a dataset's images as an :class:`ImageTable`, and the embedded demo."""

from saliqa.data.demo import DEMO_PHOTOS, DemoPhoto, build_demo
from saliqa.data.imagenet import read_imagenet_val
from saliqa.data.readers import ImageTable, open_dataset, read_folder, read_manifest, read_mit67

__all__ = [
    "DEMO_PHOTOS",
    "DemoPhoto",
    "ImageTable",
    "build_demo",
    "open_dataset",
    "read_folder",
    "read_imagenet_val",
    "read_manifest",
    "read_mit67",
]
