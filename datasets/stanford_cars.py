"""Stanford Cars: `<root>/stanford_cars/`, image paths relative to that folder, split `split_zhou_StanfordCars.json`."""
from dassl.data.datasets.build import DATASET_REGISTRY

from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class StanfordCars(SplitFileDataset):
    """Stanford Cars with CoOp's split (DATASETS.md#stanfordcars)."""

    dataset_dir = "stanford_cars"
    image_subdir = ""
    split_file = "split_zhou_StanfordCars.json"
    anchor = "stanfordcars"
