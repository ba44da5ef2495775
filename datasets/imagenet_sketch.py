"""ImageNet-Sketch: `<root>/imagenet-sketch/images/<wnid>/*` + classnames.txt;
1000 classes (sorted folders), test only.
"""
from dassl.data.datasets.build import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    """ImageNet-Sketch, test only (DATASETS.md#imagenetsketch)."""

    dataset_dir = "imagenet-sketch"
    image_subdir = "images"
    anchor = "imagenetsketch"
