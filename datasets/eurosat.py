"""EuroSAT: `<root>/eurosat/`, images under `2750`, split `split_zhou_EuroSAT.json`."""
from dassl.data.datasets.build import DATASET_REGISTRY

from .make_split import EUROSAT_NEW_CNAMES
from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class EuroSAT(SplitFileDataset):
    """EuroSAT with CoOp's split (DATASETS.md#eurosat)."""

    dataset_dir = "eurosat"
    image_subdir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    anchor = "eurosat"
    folder_names = EUROSAT_NEW_CNAMES  # folder -> CoOp's class name
