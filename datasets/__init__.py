"""Dataset loaders. Importing this package registers every module's datasets in
``dassl.data.datasets.DATASET_REGISTRY``."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
