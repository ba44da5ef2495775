from .base_dataset import DatasetBase, Datum
from .build import DATASET_REGISTRY, build_dataset
