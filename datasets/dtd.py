"""Describable Textures: `<root>/dtd/`, images under `images/`, split `split_zhou_DescribableTextures.json`.

``DescribableTextures.read_and_split_data`` is upstream's static split generator (shared
implementation in ``datasets.protocol``; sorted listings, so seeded calls are reproducible).
"""
from dassl.data.datasets.build import DATASET_REGISTRY

from . import protocol
from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class DescribableTextures(SplitFileDataset):
    """DTD with CoOp's split (DATASETS.md#describabletextures)."""

    dataset_dir = "dtd"
    image_subdir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    anchor = "describabletextures"
    folder_names = {}  # class name = folder name

    read_and_split_data = staticmethod(protocol.read_and_split_data)
