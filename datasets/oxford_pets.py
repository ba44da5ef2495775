"""Oxford-IIIT Pets: `<root>/oxford_pets/`, images under `images/`, split `split_zhou_OxfordPets.json`.

``OxfordPets`` also carries upstream's static helpers (``read_split``, ``save_split``,
``split_trainval``, ``subsample_classes``) that other dataset files call; they are the shared
implementations of ``datasets.protocol``.
"""
from dassl.data.datasets.build import DATASET_REGISTRY

from . import protocol
from .split_file_dataset import SplitFileDataset


@DATASET_REGISTRY.register()
class OxfordPets(SplitFileDataset):
    """Oxford-IIIT Pets with CoOp's split (DATASETS.md#oxfordpets)."""

    dataset_dir = "oxford_pets"
    image_subdir = "images"
    split_file = "split_zhou_OxfordPets.json"
    anchor = "oxfordpets"

    read_split = staticmethod(protocol.read_split)
    save_split = staticmethod(protocol.save_split)
    split_trainval = staticmethod(protocol.split_trainval)
    subsample_classes = staticmethod(protocol.subsample_classes)
