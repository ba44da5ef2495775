"""ImageNet-R: `<root>/imagenet-rendition/imagenet-r/<wnid>/*` + classnames.txt;
200 classes (sorted folders), test only.
"""
from dassl.data.datasets.build import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    """ImageNet-R, test only (DATASETS.md#imagenetr)."""

    dataset_dir = "imagenet-rendition"
    image_subdir = "imagenet-r"
    anchor = "imagenetr"
