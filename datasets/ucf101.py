"""UCF101 (middle frames): `<root>/ucf101/`, images under `UCF-101-midframes`, split `split_zhou_UCF101.json`."""
from dassl.data.datasets.build import DATASET_REGISTRY

from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class UCF101(SplitFileDataset):
    """UCF101 (middle frames) with CoOp's split (DATASETS.md#ucf101)."""

    dataset_dir = "ucf101"
    image_subdir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    anchor = "ucf101"
    folder_names = {}  # class name = folder name
