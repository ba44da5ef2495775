"""Food-101: `<root>/food-101/`, images under `images`, split `split_zhou_Food101.json`."""
from dassl.data.datasets.build import DATASET_REGISTRY

from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class Food101(SplitFileDataset):
    """Food-101 with CoOp's split (DATASETS.md#food101)."""

    dataset_dir = "food-101"
    image_subdir = "images"
    split_file = "split_zhou_Food101.json"
    anchor = "food101"
    folder_names = {}  # class name = folder name
