"""ImageNetV2 (matched frequency): `<root>/imagenetv2/imagenetv2-matched-frequency-format-val/<i>/*`.

Folder ``i`` holds class ``i`` of classnames.txt in file order (sorted wnids), ``i = 0..n-1``.
"""
from __future__ import annotations

import os
from collections import OrderedDict

from dassl.data.datasets.base_dataset import Datum
from dassl.data.datasets.build import DATASET_REGISTRY

from .imagenet import ImageNetVariant, list_images
from .protocol import require_dir


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    """ImageNetV2 matched-frequency, test only (DATASETS.md#imagenetv2)."""

    dataset_dir = "imagenetv2"
    image_subdir = "imagenetv2-matched-frequency-format-val"
    anchor = "imagenetv2"

    def read_data(self, classnames: OrderedDict[str, str]) -> list[Datum]:
        """Images of folders ``0 .. len(classnames)-1``; label = folder number."""
        data = []
        for label, classname in enumerate(classnames.values()):
            folder = require_dir(os.path.join(self.image_dir, str(label)), self.anchor, "class folder")
            data.extend(Datum(os.path.join(folder, name), label, classname=classname) for name in list_images(folder))
        return data
