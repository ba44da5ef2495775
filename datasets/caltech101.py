"""Caltech-101: `<root>/caltech-101/`, images under `101_ObjectCategories`, split `split_zhou_Caltech101.json`."""
from dassl.data.datasets.build import DATASET_REGISTRY

from .make_split import CALTECH101_NEW_CNAMES
from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class Caltech101(SplitFileDataset):
    """Caltech-101 with CoOp's split (DATASETS.md#caltech101)."""

    dataset_dir = "caltech-101"
    image_subdir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    anchor = "caltech101"
    folder_names = CALTECH101_NEW_CNAMES  # folder -> CoOp's class name
