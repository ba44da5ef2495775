"""Oxford Flowers-102: `<root>/oxford_flowers/`, images under `jpg`, split `split_zhou_OxfordFlowers.json`."""
from dassl.data.datasets.build import DATASET_REGISTRY

from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class OxfordFlowers(SplitFileDataset):
    """Oxford Flowers-102 with CoOp's split (DATASETS.md#oxfordflowers)."""

    dataset_dir = "oxford_flowers"
    image_subdir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    anchor = "oxfordflowers"
