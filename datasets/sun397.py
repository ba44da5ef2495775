"""SUN397: `<root>/sun397/`, images under `SUN397`, split `split_zhou_SUN397.json`."""
from dassl.data.datasets.build import DATASET_REGISTRY

from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class SUN397(SplitFileDataset):
    """SUN397 with CoOp's split (DATASETS.md#sun397)."""

    dataset_dir = "sun397"
    image_subdir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    anchor = "sun397"
