"""Data: ``DataManager``, ``DatasetWrapper``, loaders and samplers; datasets in ``.datasets``."""
from .data_manager import DataManager, DatasetWrapper, build_data_loader
from .image_check import ImageCheckError, check_dataset_images
from .samplers import build_sampler
