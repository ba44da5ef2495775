"""ImageNet-A: `<root>/imagenet-adversarial/imagenet-a/<wnid>/*` + classnames.txt;
200 classes (sorted folders), test only.
"""
from dassl.data.datasets.build import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    """ImageNet-A, test only (DATASETS.md#imageneta)."""

    dataset_dir = "imagenet-adversarial"
    image_subdir = "imagenet-a"
    anchor = "imageneta"
